import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

@Suite("Transparent route servers")
struct TransparentServersTests {
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
