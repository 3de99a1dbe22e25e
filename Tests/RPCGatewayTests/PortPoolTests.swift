import Dispatch
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import RPCGateway
import RPCWire
import Testing

@Suite("PortPool")
struct PortPoolTests {
    @Test("concurrent allocations from several threads produce one injective mapping")
    func concurrentAllocations() throws {
        let metrics = TestMetrics()
        let pool = PortPool(
            ports: 30000...30999,
            idleTimeout: .hours(1),
            metrics: GatewayMetrics(factory: metrics).route("r")
        )
        // 300 servers, every thread walks all of them from a different starting point, so the
        // same server is requested by several threads at once.
        let servers = (0..<300).map { endpoint(UInt8($0 % 250 + 1), UInt16(49152 + $0)) }
        let threads = 8
        let seen = NIOLockedValueBox<[TCPEndpoint: Set<UInt16>]>([:])

        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            var local: [TCPEndpoint: Set<UInt16>] = [:]
            for round in 0..<3 {
                for index in servers.indices {
                    let server = servers[(index + thread * 37 + round) % servers.count]
                    guard let port = pool.allocate(for: server).port else {
                        Issue.record("exhausted with 300 servers in 1000 ports")
                        continue
                    }
                    local[server, default: []].insert(port)
                    if let forwarded = pool.connectionOpened(port: port) {
                        #expect(forwarded == server)
                        pool.connectionClosed(port: port)
                    }
                }
            }
            seen.withLockedValue { seen in seen.merge(local) { $0.union($1) } }
        }

        let observed = seen.withLockedValue { $0 }
        #expect(observed.count == servers.count)
        // Every thread saw the same single port for a server, and no port serves two servers.
        #expect(observed.values.allSatisfy { $0.count == 1 })
        let ports = observed.values.compactMap(\.first)
        #expect(Set(ports).count == servers.count)

        let mappings = pool.mappings
        #expect(mappings.count == servers.count)
        #expect(pool.activeMappingCount == servers.count)
        #expect(Set(mappings.map(\.gatewayPort)).count == mappings.count)
        #expect(mappings.allSatisfy { observed[$0.server] == [$0.gatewayPort] && $0.activeConnections == 0 })
        #expect(try metrics.expectMeter("rpcgate_port_mappings_active", [("route", "r")]).lastValue == 300)
    }

    @Test("the pool updates the mappings gauge and counts exhaustion")
    func metrics() throws {
        let metrics = TestMetrics()
        let pool = PortPool(
            ports: 100...101,
            idleTimeout: .seconds(10),
            metrics: GatewayMetrics(factory: metrics).route("dc1")
        )
        #expect(pool.capacity == 2)
        let gauge = try metrics.expectMeter("rpcgate_port_mappings_active", [("route", "dc1")])
        #expect(gauge.lastValue == 0)

        #expect(pool.allocate(for: endpoint(1, 1), now: at(0)) == .allocated(100))
        #expect(pool.allocate(for: endpoint(1, 1), now: at(0)) == .existing(100))
        #expect(pool.allocate(for: endpoint(2, 1), now: at(1)) == .allocated(101))
        #expect(gauge.lastValue == 2)
        #expect(pool.server(forPort: 101) == endpoint(2, 1))

        #expect(pool.connectionOpened(port: 100, now: at(2)) == endpoint(1, 1))
        #expect(pool.allocate(for: endpoint(3, 1), now: at(5)) == .exhausted)
        #expect(pool.allocate(for: endpoint(3, 1), now: at(6)) == .exhausted)
        let exhausted = try metrics.expectCounter("rpcgate_port_pool_exhausted_total", [("route", "dc1")])
        #expect(exhausted.totalValue == 2)

        // 101 idles out and is taken over; the release is reported.
        let result = pool.allocateReportingReleases(for: endpoint(3, 1), now: at(11))
        #expect(result.allocation == .allocated(101))
        #expect(result.released == [101])
        #expect(gauge.lastValue == 2)

        pool.connectionClosed(port: 100, now: at(11))
        #expect(pool.expireIdle(now: at(21)) == [100, 101])
        #expect(gauge.lastValue == 0)
        #expect(pool.mappings.isEmpty)
        #expect(exhausted.totalValue == 2)
    }
}
