import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

@Suite("Routing by the first bind")
struct BindRoutingTests {
    let limits = WireLimits()

    @Test("A bind is routed by its first interface context")
    func routesByInterface() {
        let decision = BindRouting.decide(firstPDU: Wire.bind([Wire.samr]), servesEndpointMapper: false, limits: limits)
        #expect(decision == .resolve(Wire.samr))
    }

    @Test("Bind-time feature negotiation elements are not interfaces")
    func skipsFeatureNegotiation() {
        let body = BindPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 0,
            contexts: [
                PresentationContext(
                    contextID: 0,
                    abstractSyntax: Wire.samr,
                    transferSyntaxes: [Wire.featureNegotiation]
                ),
                PresentationContext(contextID: 1, abstractSyntax: Wire.lsarpc, transferSyntaxes: [.ndr]),
            ]
        )
        let pdu = Wire.raw(PDU(header: PDUHeader(packetType: .bind, callID: 1), body: .bind(body)))
        #expect(BindRouting.decide(firstPDU: pdu, servesEndpointMapper: false, limits: limits) == .resolve(Wire.lsarpc))
    }

    @Test("An endpoint-mapper bind on the EPM port behaves as the EPM listener")
    func endpointMapperOnSharedPort() {
        let bind = Wire.bind([.endpointMapper])
        #expect(BindRouting.decide(firstPDU: bind, servesEndpointMapper: true, limits: limits) == .endpointMapper)
        #expect(
            BindRouting.decide(firstPDU: bind, servesEndpointMapper: false, limits: limits) == .resolve(.endpointMapper)
        )
    }

    @Test("A first PDU that is not a bind is rejected")
    func notABind() {
        let request = Wire.request(callID: 1, opnum: 0)
        guard case .reject = BindRouting.decide(firstPDU: request, servesEndpointMapper: false, limits: limits) else {
            Issue.record("a request was routed")
            return
        }
        let alter = Wire.bind([Wire.samr], alter: true)
        guard case .reject = BindRouting.decide(firstPDU: alter, servesEndpointMapper: false, limits: limits) else {
            Issue.record("an alter_context was routed")
            return
        }
    }

    @Test("alter_context is refused only for an interface resolved to another port")
    func alterContext() {
        let resolved: [SyntaxID: UInt16?] = [Wire.samr: 49154, Wire.lsarpc: 49153, Wire.drsuapi: nil]
        let lookup: (SyntaxID) -> UInt16?? = { resolved[$0] }
        #expect(BindRouting.alterContext(interfaces: [Wire.samr], serverPort: 49154, resolved: lookup) == .forward)
        #expect(BindRouting.alterContext(interfaces: [Wire.lsarpc], serverPort: 49154, resolved: lookup) == .refuse)
        // Not registered, or not known yet: the server decides.
        #expect(BindRouting.alterContext(interfaces: [Wire.drsuapi], serverPort: 49154, resolved: lookup) == .forward)
        let unknown = InterfaceCatalog.named("wkssvc")!.syntax
        #expect(BindRouting.alterContext(interfaces: [unknown], serverPort: 49154, resolved: lookup) == .forward)
        #expect(
            BindRouting.alterContext(interfaces: [Wire.samr, Wire.lsarpc], serverPort: 49154, resolved: lookup)
                == .refuse
        )
    }

    @Test("Transparent routes admit only servers inside their networks")
    func transparentServers() throws {
        var route = RouteSettings(
            name: "t",
            listenAddress: "0.0.0.0",
            upstreamHost: "0.0.0.0",
            ports: 50000...50099,
            policy: Policy(name: "p", defaultAction: .allow, rules: [])
        )
        #expect(!route.admitsServer(IPv4Address(10, 99, 0, 2)))
        route.mode = .transparent(servers: [try #require(IPNetwork("10.99.0.0/24"))])
        #expect(route.admitsServer(IPv4Address(10, 99, 0, 2)))
        #expect(!route.admitsServer(IPv4Address(10, 98, 0, 2)))
        #expect(route.singlePort == nil)
        route.mode = .singlePort
        route.ports = 50000...50000
        #expect(route.singlePort == 50000)
    }
}

@Suite("Endpoint resolution cache")
struct EndpointResolutionCacheTests {
    let mapper = TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 135)
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test("An answer is kept for its time to live, then asked again")
    func expiry() {
        var cache = EndpointResolutionCache(timeToLive: .seconds(30))
        let key = EndpointResolutionCache.Key(server: mapper, interface: Wire.samr)
        #expect(cache.lookUp(key, now: start) == nil)
        cache.store(49154, for: key, now: start)
        #expect(cache.lookUp(key, now: start + .seconds(29)) == .some(49154))
        #expect(cache.lookUp(key, now: start + .seconds(30)) == nil)
        #expect(cache.count == 0)
    }

    @Test("Not registered is cached too")
    func negative() {
        var cache = EndpointResolutionCache()
        let key = EndpointResolutionCache.Key(server: mapper, interface: Wire.drsuapi)
        cache.store(nil, for: key, now: start)
        #expect(cache.lookUp(key, now: start) == .some(nil))
    }

    @Test("Servers are kept apart")
    func perServer() {
        var cache = EndpointResolutionCache()
        let other = TCPEndpoint(address: IPv4Address(10, 99, 0, 3), port: 135)
        cache.store(49154, for: .init(server: mapper, interface: Wire.samr), now: start)
        cache.store(49999, for: .init(server: other, interface: Wire.samr), now: start)
        #expect(cache.lookUp(.init(server: mapper, interface: Wire.samr), now: start) == .some(49154))
        #expect(cache.lookUp(.init(server: other, interface: Wire.samr), now: start) == .some(49999))
    }

    @Test("A failed connection invalidates every answer naming that endpoint")
    func invalidation() {
        var cache = EndpointResolutionCache()
        cache.store(49154, for: .init(server: mapper, interface: Wire.samr), now: start)
        cache.store(49154, for: .init(server: mapper, interface: InterfaceCatalog.named("wkssvc")!.syntax), now: start)
        cache.store(49153, for: .init(server: mapper, interface: Wire.lsarpc), now: start)
        cache.invalidate(address: mapper.address, port: 49154)
        #expect(cache.count == 1)
        #expect(cache.lookUp(.init(server: mapper, interface: Wire.lsarpc), now: start) == .some(49153))
    }

    @Test("The cache is bounded")
    func capacity() {
        var cache = EndpointResolutionCache(timeToLive: .seconds(30), capacity: 2)
        cache.store(1, for: .init(server: mapper, interface: Wire.samr), now: start)
        cache.store(2, for: .init(server: mapper, interface: Wire.lsarpc), now: start + .seconds(1))
        cache.store(3, for: .init(server: mapper, interface: Wire.drsuapi), now: start + .seconds(2))
        #expect(cache.count == 2)
        #expect(cache.lookUp(.init(server: mapper, interface: Wire.samr), now: start + .seconds(2)) == nil)
    }
}
