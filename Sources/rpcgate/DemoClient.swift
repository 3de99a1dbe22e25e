import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RPCGateway
import RPCPeer
import RPCPolicy
import RPCWire

/// The demo's client: what a domain member does against a DC, through the gateway. Each round
/// looks up the endpoints, resolves samr, binds and calls samr and drsuapi, tries the DCSync call
/// and binds spoolss. The first round explains every step; later rounds print one line each.
final class DemoClient: Sendable {
    struct Totals: Sendable {
        var rounds = 0
        var bindsAllowed = 0
        var bindsRefused = 0
        var callsAnswered = 0
        var callsRefused = 0
        var failures = 0
    }

    /// Calls the demo makes, by interface: opnum and name in the specification.
    enum Operations {
        static let samrEnumerateDomains: (opnum: UInt16, name: String) = (6, "SamrEnumerateDomainsInSamServer")
        static let drsBind: (opnum: UInt16, name: String) = (0, "IDL_DRSBind")
        static let drsUnbind: (opnum: UInt16, name: String) = (1, "IDL_DRSUnbind")
        static let drsGetNCChanges: (opnum: UInt16, name: String) = (3, "IDL_DRSGetNCChanges")
    }

    private let setup: DemoSetup
    private let route: RouteSettings
    private let limits: WireLimits
    private let group: any EventLoopGroup
    private let serverCalls: NIOLockedValueBox<[DemoCall: Int]>
    private let state = NIOLockedValueBox(Totals())
    private static let client = IPAddress.v4(0x7f00_0001)

    init(
        setup: DemoSetup,
        settings: GatewaySettings,
        group: any EventLoopGroup,
        serverCalls: NIOLockedValueBox<[DemoCall: Int]>
    ) {
        self.setup = setup
        // DemoSetup.yaml has exactly one route.
        self.route = settings.routes[0]
        self.limits = settings.wireLimits
        self.group = group
        self.serverCalls = serverCalls
    }

    var totals: Totals { self.state.withLockedValue { $0 } }

    /// Runs rounds until `rounds` are done (0: no limit), `deadline` passes or the task is cancelled.
    func loop(rounds: Int, interval: Double, deadline: ContinuousClock.Instant?) async {
        var number = 0
        while !Task.isCancelled {
            if rounds > 0, number >= rounds { return }
            if let deadline, ContinuousClock.now >= deadline { return }
            number += 1
            var round = Round(number: number, narrate: number == 1)
            await self.play(&round)
            if Task.isCancelled { return }
            self.state.withLockedValue { totals in
                totals.rounds += 1
                totals.bindsAllowed += round.bindsAllowed
                totals.bindsRefused += round.bindsRefused
                totals.callsAnswered += round.callsAnswered
                totals.callsRefused += round.callsRefused
                totals.failures += round.failures
            }
            if number == 1 {
                self.printServerView()
                demoPrint("")
                if rounds != 1 {
                    demoPrint(
                        "The client now repeats this every \(Self.seconds(interval)) s, one line per round, so the "
                            + "status page and /metrics stay live. Ctrl-C stops everything."
                    )
                }
            } else {
                demoPrint(round.summary)
            }
            if rounds > 0, number >= rounds { return }
            var pause = Duration.milliseconds(Int64(interval * 1000))
            if let deadline { pause = min(pause, deadline - ContinuousClock.now) }
            if pause > .zero { try? await Task.sleep(for: pause) }
        }
    }

    // MARK: - One round

    struct Round {
        var number: Int
        var narrate: Bool
        var bindsAllowed = 0
        var bindsRefused = 0
        var callsAnswered = 0
        var callsRefused = 0
        var failures = 0
        var entries = 0
        var rewritten = 0
        var hidden = 0

        func say(_ line: String) {
            if self.narrate { demoPrint(line) }
        }

        var summary: String {
            "round \(self.number): lookup \(self.entries) endpoints (\(self.rewritten) rewritten, \(self.hidden) hidden); "
                + "binds \(self.bindsAllowed) allowed, \(self.bindsRefused) refused; calls \(self.callsAnswered) answered, "
                + "\(self.callsRefused) refused\(self.failures > 0 ? "; \(self.failures) FAILED" : "")"
        }
    }

    private func play(_ round: inout Round) async {
        round.say("Round 1, step by step (the client talks only to the gateway, never to the server):")
        round.say("")
        let mapper = EndpointMapperClient(
            configuration: EndpointMapperClient.Configuration(timeout: .seconds(5), limits: self.limits)
        )
        // What the server itself registered, for the comparison (the client never sees this).
        var serverPorts: [SyntaxID: Int] = [:]
        if round.narrate,
            let direct = try? await mapper.lookUpAll(
                host: DemoSetup.host,
                port: self.setup.serverEPMPort,
                group: self.group
            )
        {
            for entry in direct.entries {
                if let interface = entry.tower?.interface, let port = entry.tower?.tcpPort {
                    serverPorts[interface] = Int(port)
                }
            }
        }

        // 1. ept_lookup through the gateway.
        round.say(
            "1. ept_lookup at the gateway's endpoint mapper \(DemoSetup.host):\(self.setup.epmPort): what does the server offer?"
        )
        do {
            let listing = try await mapper.lookUpAll(host: DemoSetup.host, port: self.setup.epmPort, group: self.group)
            round.entries = listing.entries.count
            for entry in listing.entries {
                guard let tower = entry.tower, let interface = tower.interface else { continue }
                let name = Self.name(of: interface)
                let seen = "\(tower.ipv4Address.map { "\($0)" } ?? "?"):\(tower.tcpPort.map { "\($0)" } ?? "?")"
                let original = serverPorts[interface].map { "server \(DemoSetup.host):\($0)" } ?? "server"
                let verdict: String
                if let port = tower.tcpPort, self.setup.ports.contains(Int(port)) {
                    round.rewritten += 1
                    verdict = "rewritten into the gateway's range"
                } else if tower.tcpPort == 0 {
                    round.hidden += 1
                    verdict = "hidden: the policy denies \(name)"
                } else {
                    verdict = "not rewritten"
                }
                round.say(
                    "     \(Self.padded(name, 9)) \(original)  ->  client sees \(Self.padded(seen, 16))  \(verdict)"
                )
            }
        } catch {
            round.failures += 1
            demoPrint("   ept_lookup FAILED: \(error)")
        }

        // 2. ept_map for samr.
        guard let samr = InterfaceCatalog.named("samr")?.syntax,
            let drsuapi = InterfaceCatalog.named("drsuapi")?.syntax,
            let spoolss = InterfaceCatalog.named("spoolss")?.syntax
        else { return }
        let port: Int
        do {
            guard
                let mapped = try await mapper.map(
                    samr,
                    host: DemoSetup.host,
                    port: self.setup.epmPort,
                    group: self.group
                )
            else {
                round.failures += 1
                demoPrint("2. ept_map samr FAILED: the gateway answered \"not registered\"")
                return
            }
            port = Int(mapped)
            let original =
                serverPorts[samr].map { " (the server said \(DemoSetup.host):\($0); the gateway rewrote it)" } ?? ""
            round.say("2. ept_map samr: the gateway answers \(DemoSetup.host):\(port)\(original)")
        } catch {
            round.failures += 1
            demoPrint("2. ept_map samr FAILED: \(error)")
            return
        }
        let target = PeerAddress(host: DemoSetup.host, port: port)

        // 3. samr: bind and call.
        await self.session(target, &round) { session, round in
            guard await self.bind(samr, on: session, step: "3. connect \(target), bind samr", &round) else { return }
            await self.call(Operations.samrEnumerateDomains, of: samr, on: session, step: "   call", &round)
        }

        // 4, 5. drsuapi: an allowed call, the DCSync call, and an allowed call after it.
        await self.session(target, &round) { session, round in
            guard await self.bind(drsuapi, on: session, step: "4. connect \(target), bind drsuapi", &round) else {
                return
            }
            await self.call(Operations.drsBind, of: drsuapi, on: session, step: "   call", &round)
            await self.call(Operations.drsGetNCChanges, of: drsuapi, on: session, step: "5. call", &round)
            await self.call(
                Operations.drsUnbind,
                of: drsuapi,
                on: session,
                step: "   on the same connection, call",
                note: " (a refused call leaves an unsigned connection usable)",
                &round
            )
        }

        // 6. spoolss: not allowed, so the bind is refused.
        await self.session(target, &round) { session, round in
            _ = await self.bind(spoolss, on: session, step: "6. connect \(target), bind spoolss", &round)
        }
    }

    private func session(
        _ target: PeerAddress,
        _ round: inout Round,
        _ body: (PeerSession, inout Round) async -> Void
    ) async {
        do {
            let session = try await PeerSession.connect(to: target, group: self.group, timeout: .seconds(5))
            await body(session, &round)
            await session.close()
        } catch {
            round.failures += 1
            demoPrint("   connecting to \(target) FAILED: \(error)")
        }
    }

    /// Binds `interface`; says whether the gateway let it through and by which rule.
    private func bind(_ interface: SyntaxID, on session: PeerSession, step: String, _ round: inout Round) async -> Bool
    {
        let name = Self.name(of: interface)
        let expected = self.route.policy.explain(PolicyQuery(interface: interface, client: Self.client))
        do {
            try await session.bind(interface)
            round.bindsAllowed += 1
            round.say("\(step): allowed (\(Self.decidedBy(expected)))")
            return true
        } catch let refused as BindRefused {
            round.bindsRefused += 1
            let reason =
                refused.result == 2 && refused.reason == 1
                ? "provider rejection, abstract syntax not supported" : "\(refused)"
            round.say(
                "\(step): refused by the gateway (bind_ack: \(reason)); \(Self.decidedBy(expected)); "
                    + "\(name) never reaches the server"
            )
            return false
        } catch {
            round.failures += 1
            demoPrint("\(step) FAILED: \(error)")
            return false
        }
    }

    /// Calls one operation; says whether the server answered or the gateway refused it.
    private func call(
        _ operation: (opnum: UInt16, name: String),
        of interface: SyntaxID,
        on session: PeerSession,
        step: String,
        note: String = "",
        _ round: inout Round
    ) async {
        let what = "\(operation.name) (opnum \(operation.opnum))"
        let expected = self.route.policy.explain(
            PolicyQuery(interface: interface, opnum: operation.opnum, client: Self.client)
        )
        do {
            _ = try await session.call(opnum: operation.opnum)
            round.callsAnswered += 1
            round.say("\(step) \(what): answered by the server\(note)")
        } catch let fault as CallFaulted where fault.status == .accessDenied {
            round.callsRefused += 1
            let received = self.serverCalls.withLockedValue {
                $0[DemoCall(interface: interface, opnum: operation.opnum)] ?? 0
            }
            round.say(
                "\(step) \(what): refused by the gateway with a fault (0x00000005, access denied); "
                    + "\(Self.decidedBy(expected)); "
                    + (received == 0 ? "the server never received it" : "yet the server received it \(received) times")
            )
        } catch {
            round.failures += 1
            demoPrint("\(step) \(what) FAILED: \(error)")
        }
    }

    /// What the demo server received over the whole run so far (the client cannot see this).
    private func printServerView() {
        let calls = self.serverCalls.withLockedValue { $0 }
        var byInterface: [String: [UInt16]] = [:]
        for call in calls.keys { byInterface[Self.name(of: call.interface), default: []].append(call.opnum) }
        let received = byInterface.keys.sorted().map { name in
            let opnums = (byInterface[name] ?? []).sorted().map(String.init).joined(separator: ", ")
            return "\(name) opnum\(opnums.contains(",") ? "s" : "") \(opnums)"
        }
        demoPrint("")
        demoPrint(
            "The demo server itself received: \(received.isEmpty ? "nothing" : received.joined(separator: "; "))."
        )
    }

    // MARK: - Text

    static func name(of interface: SyntaxID) -> String {
        InterfaceCatalog.name(of: interface) ?? "\(interface)"
    }

    static func decidedBy(_ explanation: PolicyExplanation) -> String {
        guard let rule = explanation.rule else {
            return "decided by the policy's default (\(explanation.decision.action))"
        }
        return "decided by \(rule.origin)"
    }

    static func padded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }
}

/// The demo's opening lines: what runs where.
enum DemoNarration {
    static func banner(setup: DemoSetup, statusURL: String) {
        let served = DemoSetup.served.map(\.name).joined(separator: ", ")
        demoPrint("RPCGate demo: a gateway in front of a bundled RPC server, and a client, all on \(DemoSetup.host).")
        demoPrint("")
        demoPrint(
            "  server   stands in for a domain controller: endpoint mapper \(DemoSetup.host):\(setup.serverEPMPort),"
        )
        demoPrint("           \(served) on \(DemoSetup.host):\(setup.serverDataPort)")
        demoPrint(
            "  gateway  endpoint mapper \(DemoSetup.host):\(setup.epmPort), ports \(setup.ports.lowerBound)-\(setup.ports.upperBound); "
                + "upstream \(DemoSetup.host):\(setup.serverEPMPort)"
        )
        demoPrint(
            "           policy: rule 0 profile block-dcsync (DCSync calls refused), rule 1 allow "
                + "\(DemoSetup.allowed.joined(separator: ", ")), default deny"
        )
        demoPrint("  status page  \(statusURL)")
        demoPrint("  metrics      \(statusURL)metrics")
        demoPrint("")
    }
}
