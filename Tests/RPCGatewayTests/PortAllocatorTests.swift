import NIOCore
import RPCGateway
import RPCWire
import Testing

/// `10.0.0.<host>:<port>`.
func endpoint(_ host: UInt8, _ port: UInt16) -> TCPEndpoint {
    TCPEndpoint(address: IPv4Address(10, 0, 0, host), port: port)
}

/// Injected time: `seconds` after an arbitrary origin.
func at(_ seconds: Int64) -> NIODeadline {
    .uptimeNanoseconds(1_000_000_000_000) + .seconds(seconds)
}

@Suite("PortAllocator")
struct PortAllocatorTests {
    @Test("the same server always gets the same port; lookups don't burn ports")
    func stableMapping() {
        var allocator = PortAllocator(ports: 50000...50002, idleTimeout: .seconds(60))
        let a = endpoint(1, 49667)
        let b = endpoint(1, 49668)

        #expect(allocator.allocate(for: a, now: at(0)) == .allocated(50000))
        for second in 1...100 {
            #expect(allocator.allocate(for: a, now: at(Int64(second))) == .existing(50000))
        }
        #expect(allocator.allocate(for: b, now: at(101)) == .allocated(50001))
        #expect(allocator.allocate(for: endpoint(2, 49667), now: at(102)) == .allocated(50002))
        #expect(allocator.activeMappingCount == 3)
        #expect(allocator.capacity == 3)
        #expect(allocator.server(forPort: 50000) == a)
        #expect(allocator.server(forPort: 50001) == b)
        #expect(allocator.server(forPort: 49999) == nil)
        #expect(allocator.allocate(for: a, now: at(103)).port == 50000)
    }

    @Test("mappings snapshot lists every mapping by port")
    func mappingsSnapshot() {
        var allocator = PortAllocator(ports: 7000...7009, idleTimeout: .seconds(60))
        _ = allocator.allocate(for: endpoint(1, 1000), now: at(0))
        _ = allocator.allocate(for: endpoint(2, 2000), now: at(1))
        _ = allocator.connectionOpened(port: 7001, now: at(5))
        #expect(
            allocator.mappings == [
                PortMapping(gatewayPort: 7000, server: endpoint(1, 1000), activeConnections: 0, lastUsed: at(0)),
                PortMapping(gatewayPort: 7001, server: endpoint(2, 2000), activeConnections: 1, lastUsed: at(5)),
            ]
        )
    }

    @Test("an idle mapping expires once idleTimeout has passed since its last use")
    func idleExpiry() {
        var allocator = PortAllocator(ports: 50000...50009, idleTimeout: .seconds(10))
        let a = endpoint(1, 49667)
        #expect(allocator.allocate(for: a, now: at(0)) == .allocated(50000))

        #expect(allocator.expireIdle(now: at(10) - .nanoseconds(1)) == [])
        #expect(allocator.server(forPort: 50000) == a)
        #expect(allocator.expireIdle(now: at(10)) == [50000])
        #expect(allocator.server(forPort: 50000) == nil)
        #expect(allocator.activeMappingCount == 0)
        #expect(allocator.expireIdle(now: at(100)) == [])
        // The server gets a fresh mapping, on the next port in round-robin order.
        #expect(allocator.allocate(for: a, now: at(11)) == .allocated(50001))
    }

    @Test("a repeated lookup restarts the idle timer")
    func lookupRefreshes() {
        var allocator = PortAllocator(ports: 50000...50009, idleTimeout: .seconds(10))
        let a = endpoint(1, 49667)
        _ = allocator.allocate(for: a, now: at(0))
        #expect(allocator.allocate(for: a, now: at(9)) == .existing(50000))
        #expect(allocator.expireIdle(now: at(15)) == [])
        #expect(allocator.expireIdle(now: at(19)) == [50000])
    }

    @Test("an out-of-order `now` never moves lastUsed backwards")
    func timeNeverGoesBackwards() {
        var allocator = PortAllocator(ports: 50000...50009, idleTimeout: .seconds(10))
        let a = endpoint(1, 49667)
        _ = allocator.allocate(for: a, now: at(20))
        _ = allocator.allocate(for: a, now: at(5))
        #expect(allocator.mappings.first?.lastUsed == at(20))
        #expect(allocator.expireIdle(now: at(29)) == [])
    }

    @Test("a mapping with open connections never expires; the idle timer starts at the last close")
    func noExpiryWhileActive() {
        var allocator = PortAllocator(ports: 50000...50009, idleTimeout: .seconds(10))
        let a = endpoint(1, 49667)
        _ = allocator.allocate(for: a, now: at(0))

        #expect(allocator.connectionOpened(port: 50000, now: at(1)) == a)
        #expect(allocator.connectionOpened(port: 50000, now: at(2)) == a)
        #expect(allocator.mappings.first?.activeConnections == 2)
        #expect(allocator.expireIdle(now: at(1_000_000)) == [])

        allocator.connectionClosed(port: 50000, now: at(100))
        #expect(allocator.expireIdle(now: at(1_000_000)) == [])

        allocator.connectionClosed(port: 50000, now: at(200))
        #expect(allocator.mappings.first?.activeConnections == 0)
        #expect(allocator.expireIdle(now: at(209)) == [])
        #expect(allocator.expireIdle(now: at(210)) == [50000])
    }

    @Test("connections on unmapped ports are refused; unbalanced closes are ignored")
    func unmappedPorts() {
        var allocator = PortAllocator(ports: 50000...50009, idleTimeout: .seconds(10))
        #expect(allocator.connectionOpened(port: 50000, now: at(0)) == nil)
        #expect(allocator.connectionOpened(port: 80, now: at(0)) == nil)
        allocator.connectionClosed(port: 50000, now: at(0))
        #expect(allocator.activeMappingCount == 0)

        _ = allocator.allocate(for: endpoint(1, 1), now: at(0))
        allocator.connectionClosed(port: 50000, now: at(1))
        #expect(allocator.mappings.first?.activeConnections == 0)
        #expect(allocator.connectionOpened(port: 50000, now: at(2)) == endpoint(1, 1))
        #expect(allocator.mappings.first?.activeConnections == 1)
    }

    @Test("exhausted when every port is taken; freeing a mapping makes room")
    func exhaustion() {
        var allocator = PortAllocator(ports: 50000...50002, idleTimeout: .seconds(10))
        for host: UInt8 in 1...3 {
            #expect(allocator.allocate(for: endpoint(host, 1), now: at(0)).port != nil)
        }
        _ = allocator.connectionOpened(port: 50000, now: at(0))
        _ = allocator.connectionOpened(port: 50001, now: at(0))

        #expect(allocator.allocate(for: endpoint(4, 1), now: at(5)) == .exhausted)
        // Mapped servers still resolve while the range is full.
        #expect(allocator.allocate(for: endpoint(1, 1), now: at(5)) == .existing(50000))

        // Once the idle mapping times out, allocation expires it and reuses its port.
        var released: [UInt16] = []
        #expect(allocator.allocate(for: endpoint(4, 1), now: at(10), released: &released) == .allocated(50002))
        #expect(released == [50002])
        #expect(allocator.server(forPort: 50002) == endpoint(4, 1))

        // All busy: nothing expires, however late.
        _ = allocator.connectionOpened(port: 50002, now: at(10))
        #expect(allocator.allocate(for: endpoint(5, 1), now: at(1_000_000)) == .exhausted)

        // A connection closes; after the idle timeout its port is free again.
        allocator.connectionClosed(port: 50001, now: at(1_000_000))
        #expect(allocator.allocate(for: endpoint(5, 1), now: at(1_000_009)) == .exhausted)
        #expect(allocator.allocate(for: endpoint(5, 1), now: at(1_000_010)) == .allocated(50001))

        // An explicit release makes room too.
        allocator.connectionClosed(port: 50000, now: at(1_000_010))
        #expect(allocator.expireIdle(now: at(1_000_020)) == [50000, 50001])
        #expect(allocator.allocate(for: endpoint(6, 1), now: at(1_000_020)).port != nil)
    }

    @Test("a one-port range and the full UInt16 range")
    func rangeEdges() {
        var single = PortAllocator(ports: 65535...65535, idleTimeout: .seconds(1))
        #expect(single.capacity == 1)
        #expect(single.allocate(for: endpoint(1, 1), now: at(0)) == .allocated(65535))
        #expect(single.allocate(for: endpoint(2, 1), now: at(0)) == .exhausted)
        #expect(single.allocate(for: endpoint(2, 1), now: at(1)) == .allocated(65535))

        var full = PortAllocator(ports: 0...65535, idleTimeout: .seconds(1))
        #expect(full.capacity == 65536)
        #expect(full.allocate(for: endpoint(1, 1), now: at(0)) == .allocated(0))
        #expect(full.allocate(for: endpoint(2, 1), now: at(0)) == .allocated(1))
    }

    @Test("ports are handed out round-robin, so a just-released port is reused last")
    func roundRobin() {
        var allocator = PortAllocator(ports: 1000...1003, idleTimeout: .seconds(10))
        #expect(allocator.allocate(for: endpoint(1, 1), now: at(0)) == .allocated(1000))
        #expect(allocator.allocate(for: endpoint(2, 1), now: at(5)) == .allocated(1001))
        #expect(allocator.expireIdle(now: at(10)) == [1000])

        // 1000 is the lowest free port, but the search continues after the last allocation.
        #expect(allocator.allocate(for: endpoint(3, 1), now: at(11)) == .allocated(1002))
        #expect(allocator.allocate(for: endpoint(4, 1), now: at(11)) == .allocated(1003))
        #expect(allocator.allocate(for: endpoint(5, 1), now: at(11)) == .allocated(1000))
        #expect(allocator.allocate(for: endpoint(6, 1), now: at(11)) == .exhausted)

        // Released in the middle of the range and the only free port: reused after wrapping.
        #expect(allocator.expireIdle(now: at(15)) == [1001])
        #expect(allocator.allocate(for: endpoint(6, 1), now: at(16)) == .allocated(1001))
        // The old server of 1000 comes back after its mapping expired: it gets the next free port.
        #expect(allocator.expireIdle(now: at(21)) == [1000, 1002, 1003])
        #expect(allocator.allocate(for: endpoint(1, 1), now: at(21)) == .allocated(1002))
    }

    @Test("random operations keep the mapping injective and consistent", arguments: [1, 2, 3, 42, 1234] as [UInt64])
    func injective(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let ports: ClosedRange<UInt16> = 40000...40019
        var allocator = PortAllocator(ports: ports, idleTimeout: .seconds(30))
        let servers = (0..<60).map { endpoint(UInt8($0 % 7 + 1), UInt16(49152 + $0)) }
        var open: [UInt16: (server: TCPEndpoint, count: Int)] = [:]  // connections the test holds open
        var clock: Int64 = 0
        var outcomes: [String: Int] = [:]

        for _ in 0..<4000 {
            clock += Int64(random.next(below: 4))
            let now = at(clock)
            let before = Dictionary(uniqueKeysWithValues: allocator.mappings.map { ($0.gatewayPort, $0.server) })
            switch random.next(below: 10) {
            case 0..<5:
                let server = servers[random.next(below: servers.count)]
                let previous = before.first { $0.value == server }?.key
                let allocation = allocator.allocate(for: server, now: now)
                switch allocation {
                case .existing(let port):
                    #expect(port == previous)
                    outcomes["existing", default: 0] += 1
                case .allocated(let port):
                    #expect(previous == nil)
                    #expect(ports.contains(port))
                    // The port was free, or held an idle mapping that expired to make room.
                    #expect(before[port] == nil || open[port] == nil)
                    outcomes["allocated", default: 0] += 1
                case .exhausted:
                    #expect(previous == nil)
                    #expect(allocator.activeMappingCount == allocator.capacity)
                    outcomes["exhausted", default: 0] += 1
                }
            case 5..<7:
                let port = ports.lowerBound + UInt16(random.next(below: ports.count))
                if let server = allocator.connectionOpened(port: port, now: now) {
                    #expect(server == before[port])
                    open[port, default: (server, 0)].count += 1
                } else {
                    #expect(before[port] == nil)
                }
            case 7..<9:
                if let port = open.keys.sorted().first {
                    allocator.connectionClosed(port: port, now: now)
                    open[port]!.count -= 1
                    if open[port]!.count == 0 { open[port] = nil }
                }
            default:
                for port in allocator.expireIdle(now: now) {
                    #expect(open[port] == nil)
                    #expect(before[port] != nil)
                }
            }

            // Invariants: injective both ways, in range, and busy ports keep their server.
            let mappings = allocator.mappings
            #expect(Set(mappings.map(\.gatewayPort)).count == mappings.count)
            #expect(Set(mappings.map(\.server)).count == mappings.count)
            #expect(mappings.allSatisfy { ports.contains($0.gatewayPort) })
            #expect(mappings.count <= allocator.capacity)
            #expect(allocator.activeMappingCount == mappings.count)
            for mapping in mappings {
                #expect(allocator.server(forPort: mapping.gatewayPort) == mapping.server)
                #expect(mapping.activeConnections == open[mapping.gatewayPort]?.count ?? 0)
            }
            for (port, held) in open {
                #expect(allocator.server(forPort: port) == held.server)
            }
        }
        // The walk exercised every outcome.
        #expect(outcomes["existing", default: 0] > 0)
        #expect(outcomes["allocated", default: 0] > 0)
        #expect(outcomes["exhausted", default: 0] > 0)
    }
}

/// A small deterministic generator, so property-style tests reproduce from their seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next(below bound: Int) -> Int {
        Int(self.next(upperBound: UInt64(bound)))
    }
}
