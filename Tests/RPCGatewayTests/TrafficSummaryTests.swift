import Foundation
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

@Suite("Top interfaces and sources")
struct TrafficSummaryTests {
    static let samr = InterfaceCatalog.named("samr")!.syntax
    static let drsuapi = InterfaceCatalog.named("drsuapi")!.syntax

    @Test func ordersBySeenAndByDenied() {
        let summary = TrafficSummary()
        for _ in 0..<3 { summary.record(interface: Self.samr, source: "10.0.0.1", denied: false) }
        summary.record(interface: Self.drsuapi, source: "10.0.0.2", denied: true)
        summary.record(interface: Self.drsuapi, source: "10.0.0.2", denied: true)
        let top = summary.snapshot
        #expect(top.interfaces.map(\.key) == [Self.samr, Self.drsuapi])
        #expect(top.interfaces.map(\.counts) == [.init(seen: 3, denied: 0), .init(seen: 2, denied: 2)])
        #expect(top.deniedInterfaces.map(\.key) == [Self.drsuapi])
        #expect(top.deniedSources.map(\.key) == ["10.0.0.2"])
    }

    @Test func memoryIsBoundedByOthers() {
        let summary = TrafficSummary()
        for index in 0..<(TrafficSummary.maximumKeys + 10) {
            summary.record(
                interface: Self.samr,
                source: "10.\(index / 65536).\(index / 256 % 256).\(index % 256)",
                denied: index % 2 == 0
            )
        }
        let top = summary.snapshot
        #expect(top.sources.count == TrafficSummary.topCount)
        #expect(top.otherSources.seen == 10 && top.otherSources.denied == 5)
        #expect(top.otherInterfaces.seen == 0)
    }

    @Test func statusPageAndJSONShowTheTopTablesEscaped() throws {
        let summary = TrafficSummary()
        summary.record(interface: Self.samr, source: "<script>", denied: true)
        var status = StatusFixtures.status()
        status.traffic = summary.snapshot
        let page = StatusPage.render(status)
        #expect(page.contains("<section id=\"traffic\">"))
        #expect(page.contains("Interfaces seen") && page.contains("Sources denied"))
        #expect(page.contains("&lt;script&gt;") && !page.contains("<td class=\"mono\"><script>"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.json.text.utf8)) as? [String: Any])
        let top = try #require(json["top"] as? [String: Any])
        let interfaces = try #require(top["interfaces"] as? [[String: Any]])
        let first = try #require(interfaces.first)
        #expect(first["interface"] as? String == "samr")
        #expect(first["denied"] as? Int == 1)
    }
}

extension TrafficSummaryTests {
    @Test func refusalsShowWhoWasRefused() throws {
        var status = StatusFixtures.status()
        try #require(!status.denials.isEmpty)
        status.denials[0].identity = .ntlm(NTLMIdentity(user: "eve", domain: "EXAMPLE", workstation: "<WS>"))
        status.denials[1].identity = .kerberos(
            KerberosServiceIdentity(realm: "EXAMPLE.TEST", serviceName: ["host", "dc1"])
        )
        let page = StatusPage.render(status)
        #expect(page.contains("<th>Identity</th>"))
        #expect(page.contains("<td>EXAMPLE\\eve</td>"))
        #expect(page.contains("<td>ticket for host/dc1@EXAMPLE.TEST</td>"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.json.text.utf8)) as? [String: Any])
        let denials = try #require(json["denials"] as? [[String: Any]])
        #expect(denials.first?["identity"] as? String == "EXAMPLE\\eve")
    }
}
