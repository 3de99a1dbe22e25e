import Foundation
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@Suite("Edge and core configuration")
struct TunnelConfigurationTests {
    /// A directory with empty edge.pem, edge.key, core.pem, core.key and ca.pem (the loader only
    /// checks that they exist).
    private func pemDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "rpcgate-tls-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in ["edge.pem", "edge.key", "core.pem", "core.key", "ca.pem"] {
            _ = FileManager.default.createFile(atPath: "\(directory)/\(name)", contents: Data())
        }
        return directory
    }

    /// The shipped example with its file paths and addresses as they are, loaded as if it lived in
    /// `directory`.
    private func example(_ name: String, in directory: String) throws -> GatewaySettings {
        var text = try String(contentsOf: configDirectory.appendingPathComponent(name), encoding: .utf8)
        text = text.replacingOccurrences(of: "/var/log/rpcgate/audit.jsonl", with: "\(directory)/audit.jsonl")
        return try ConfigurationLoader.parse(yaml: text, fileName: "\(directory)/\(name)")
    }

    @Test("The two-gateway examples load as written; relative PEM paths are relative to the file")
    func examples() throws {
        let directory = try self.pemDirectory()
        let edge = try self.example("rpcgate.edge.yaml", in: directory)
        #expect(edge.routes.count == 1)
        #expect(edge.routes[0].via == "core1")
        #expect(edge.routes[0].upstreamHost == "10.99.0.2")
        let peer = try #require(edge.peers["core1"])
        #expect(peer.host == "10.97.0.2")
        #expect(peer.port == 8443)
        #expect(peer.serverName == "core1.example.test")
        #expect(
            peer.tls
                == TLSFiles(
                    certificate: "\(directory)/edge.pem",
                    privateKey: "\(directory)/edge.key",
                    certificateAuthority: "\(directory)/ca.pem"
                )
        )
        #expect(edge.core == nil)

        let coreSettings = try self.example("rpcgate.core.yaml", in: directory)
        #expect(coreSettings.routes.isEmpty)
        let core = try #require(coreSettings.core)
        #expect(core.listenHost == "10.97.0.2")
        #expect(core.listenPort == 8443)
        #expect(core.allowedPeers == ["edge1.example.test", "spiffe://example.test/edge1"])
        #expect(core.upstreams == [IPv4Address(10, 99, 0, 2)])
        #expect(core.policy.name == "dc")
        #expect(core.upstreamEPMPort == 135)
        #expect(core.headerTimeout == .seconds(5))
        #expect(core.tls.certificate == "\(directory)/core.pem")
    }

    @Test("The keys of the issue, written inline, load")
    func inlineKeys() throws {
        let directory = try self.pemDirectory()
        let edge = try ConfigurationLoader.parse(
            yaml: """
                routes:
                  - name: dc1
                    listen: 10.98.0.1
                    ports: 50000-50099
                    upstream: 10.99.0.2          # the server, as the core will reach it
                    policy: dc
                    via: core1
                peers:
                  core1:
                    address: 10.97.0.2:8443
                    tls: { cert: edge.pem, key: edge.key, ca: ca.pem, server_name: core1.example.test }
                policies:
                  dc: { default: deny, rules: [ { action: allow, interfaces: [samr] } ] }

                """,
            fileName: "\(directory)/edge.yaml"
        )
        #expect(edge.routes[0].via == "core1")
        let core = try ConfigurationLoader.parse(
            yaml: """
                core:
                  listen: 10.97.0.2:8443
                  tls: { cert: core.pem, key: core.key, ca: ca.pem, allow: ["edge1.example.test", "spiffe://example.test/edge1"] }
                  upstreams: [10.99.0.2]
                  policy: dc
                policies:
                  dc: { default: deny, rules: [ { action: allow, interfaces: [samr] } ] }

                """,
            fileName: "\(directory)/core.yaml"
        )
        #expect(core.core?.allowedPeers.count == 2)
    }

    @Test("via must name a defined peer")
    func unknownPeer() throws {
        let yaml = minimalConfig.replacingOccurrences(of: "    policy: dc\n", with: "    policy: dc\n    via: core2\n")
        let found = try #require(problem(at: "routes[0].via", in: yaml))
        #expect(found.message.contains("unknown peer \"core2\""))
        #expect(found.line == 7)
    }

    @Test("A route with via needs an IPv4 upstream (the target TLV is IPv4; the edge may not resolve it)")
    func viaNeedsIPv4Upstream() throws {
        let directory = try self.pemDirectory()
        let yaml =
            minimalConfig.replacingOccurrences(of: "upstream: 10.99.0.2", with: "upstream: dc1.example.test")
            .replacingOccurrences(of: "    policy: dc\n", with: "    policy: dc\n    via: core1\n")
            + "peers:\n  core1:\n    address: 10.97.0.2:8443\n"
            + "    tls: {cert: \(directory)/edge.pem, key: \(directory)/edge.key, ca: \(directory)/ca.pem, server_name: core1.example.test}\n"
        let found = try #require(problem(at: "routes[0].upstream", in: yaml))
        #expect(found.message.contains("IPv4 address as the core reaches it"))
    }

    @Test("Peer and core problems are located")
    func peerAndCoreProblems() throws {
        let peer = try #require(
            problem(
                at: "peers.core1.tls.cert",
                in: minimalConfig + """
                    peers:
                      core1:
                        address: 10.97.0.2:8443
                        tls: { cert: /nonexistent/edge.pem, key: /dev/null, ca: /dev/null, server_name: core1.example.test }

                    """
            )
        )
        #expect(peer.message.contains("/nonexistent/edge.pem does not exist"))
        #expect(peer.line == 16)

        let missing = problems(
            minimalConfig
                + "peers:\n  core1:\n    address: 10.97.0.2\n    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null}\n"
        )
        #expect(missing.contains { $0.keyPath == "peers.core1.address" })
        #expect(missing.contains { $0.keyPath == "peers.core1.tls" && $0.message.contains("server_name") })

        let core = problems(
            minimalConfig + """
                core:
                  listen: 10.97.0.2:8443
                  tls: { cert: /dev/null, key: /dev/null, ca: /dev/null, allow: ["*.example.test"] }
                  upstreams: [dc1.example.test]
                  policy: dcc

                """
        )
        #expect(core.contains { $0.keyPath == "core.tls.allow[0]" && $0.message.contains("wildcards") })
        #expect(core.contains { $0.keyPath == "core.upstreams[0]" && $0.message.contains("not an IPv4 address") })
        #expect(core.contains { $0.keyPath == "core.policy" && $0.message.contains("unknown policy \"dcc\"") })

        let noAllow = problems(
            "core:\n  listen: 10.97.0.2:8443\n  tls: {cert: /dev/null, key: /dev/null, ca: /dev/null}\n  upstreams: [10.99.0.2]\n  policy: dc\n"
                + "policies:\n  dc: {default: deny}\n"
        )
        #expect(noAllow.contains { $0.keyPath == "core.tls" && $0.message.contains("allow") })
    }

    @Test("Without core, routes are still required")
    func routesRequired() throws {
        let found = problems("policies:\n  dc: {default: deny}\n")
        #expect(found.contains { $0.message.contains("missing required key \"routes\"") })
    }
}
