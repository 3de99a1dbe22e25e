import NIOConcurrencyHelpers
import RPCPolicy
import Testing

@testable import RPCGateway

@Suite("Fair admission per source")
struct SourceAdmissionTests {
    static let second: UInt64 = 1_000_000_000
    static let flood = IPAddress("10.0.0.66")!
    static let good = IPAddress("10.0.0.7")!

    @Test("Sources are addresses for IPv4 and /64 for IPv6 by default; prefixes are configurable")
    func keys() {
        let limits = SourceLimits()
        #expect(SourceKey(Self.flood, limits: limits) != SourceKey(Self.good, limits: limits))
        let a = SourceKey(IPAddress("2001:db8:1:2::10")!, limits: limits)
        let b = SourceKey(IPAddress("2001:db8:1:2:ffff::1")!, limits: limits)
        let c = SourceKey(IPAddress("2001:db8:1:3::10")!, limits: limits)
        #expect(a == b, "one /64")
        #expect(a != c)
        #expect(a.description == "2001:db8:1:2::/64")
        #expect(SourceKey(Self.flood, limits: limits).description == "10.0.0.66")
        let wide = SourceLimits(ipv4PrefixLength: 24, ipv6PrefixLength: 48)
        #expect(SourceKey(Self.flood, limits: wide) == SourceKey(Self.good, limits: wide))
        #expect(SourceKey(Self.flood, limits: wide).description == "10.0.0.0/24")
        #expect(SourceKey(IPAddress("2001:db8:1:2::10")!, limits: wide) == c.widened(to: wide))
        let host = SourceLimits(ipv6PrefixLength: 128)
        #expect(
            SourceKey(IPAddress("2001:db8::1")!, limits: host) != SourceKey(IPAddress("2001:db8::2")!, limits: host)
        )
        #expect(SourceKey(IPAddress("2001:db8::1")!, limits: host).description == "2001:db8::1")
    }

    @Test("A source over its concurrent limit is refused on its own; another source is not")
    func concurrent() {
        var table = SourceTable()
        let limits = SourceLimits(maximumConnections: 3, newConnectionsPerSecond: 1000)
        let flood = SourceKey(Self.flood, limits: limits)
        let good = SourceKey(Self.good, limits: limits)
        for _ in 0..<3 { #expect(table.admit(route: "r", source: flood, limits: limits, now: 0) == .admitted) }
        #expect(
            table.admit(route: "r", source: flood, limits: limits, now: 0)
                == .refused(.concurrent, log: true, suppressed: 0)
        )
        #expect(table.admit(route: "r", source: good, limits: limits, now: 0) == .admitted)
        #expect(table.admit(route: "other", source: flood, limits: limits, now: 0) == .admitted, "limits are per route")
        table.release(route: "r", source: flood, now: 1)
        #expect(table.admit(route: "r", source: flood, limits: limits, now: 2) == .admitted)
    }

    @Test("New connections per second: a burst of twice the rate, then the rate")
    func rate() {
        var table = SourceTable()
        let limits = SourceLimits(maximumConnections: 1000, newConnectionsPerSecond: 10)
        let flood = SourceKey(Self.flood, limits: limits)
        var admitted = 0
        for _ in 0..<50 where table.admit(route: "r", source: flood, limits: limits, now: 0) == .admitted {
            admitted += 1
        }
        #expect(admitted == 20, "burst = 2 x rate")
        #expect(table.admit(route: "r", source: flood, limits: limits, now: 0) != .admitted)
        // One emission interval (100 ms) later, one more.
        #expect(table.admit(route: "r", source: flood, limits: limits, now: Self.second / 10) == .admitted)
        #expect(table.admit(route: "r", source: flood, limits: limits, now: Self.second / 10) != .admitted)
        // Over a second at the rate: 10 more.
        admitted = 0
        for step in 1...100 {
            let now = Self.second / 10 + UInt64(step) * Self.second / 100
            if table.admit(route: "r", source: flood, limits: limits, now: now) == .admitted { admitted += 1 }
        }
        #expect(admitted == 10)
    }

    @Test("Refusals are logged at most once per interval per source, with the count left out")
    func logOncePerInterval() {
        var table = SourceTable(logIntervalNanoseconds: 60 * Self.second)
        let limits = SourceLimits(maximumConnections: 1, newConnectionsPerSecond: 1000)
        let flood = SourceKey(Self.flood, limits: limits)
        let other = SourceKey(IPAddress("10.0.0.67")!, limits: limits)
        #expect(table.admit(route: "r", source: flood, limits: limits, now: 0) == .admitted)
        #expect(table.admit(route: "r", source: other, limits: limits, now: 0) == .admitted)
        #expect(
            table.admit(route: "r", source: flood, limits: limits, now: 1)
                == .refused(.concurrent, log: true, suppressed: 0)
        )
        for step in 2..<1002 {
            #expect(
                table.admit(route: "r", source: flood, limits: limits, now: UInt64(step))
                    == .refused(.concurrent, log: false, suppressed: 0)
            )
        }
        #expect(
            table.admit(route: "r", source: other, limits: limits, now: 5)
                == .refused(.concurrent, log: true, suppressed: 0)
        )
        #expect(
            table.admit(route: "r", source: flood, limits: limits, now: 61 * Self.second)
                == .refused(.concurrent, log: true, suppressed: 1000)
        )
    }

    @Test("The table stays bounded: idle sources go at release, sources without connections are evicted when full")
    func bounded() {
        var table = SourceTable(logIntervalNanoseconds: 60 * Self.second, maximumIdleSources: 100)
        let limits = SourceLimits(maximumConnections: 1, newConnectionsPerSecond: 1)
        // 10,000 distinct sources each open and close one connection (their buckets not yet full).
        for index in 0..<10_000 {
            let source = SourceKey(.v4(0x0A00_0000 + UInt32(index)), limits: limits)
            #expect(table.admit(route: "r", source: source, limits: limits, now: UInt64(index)) == .admitted)
            table.release(route: "r", source: source, now: UInt64(index))
            #expect(table.count <= 101)
        }
        // Sources with open connections are never evicted.
        var table2 = SourceTable(maximumIdleSources: 10)
        let open = (0..<50).map { SourceKey(.v4(0x0B00_0000 + UInt32($0)), limits: limits) }
        for source in open { #expect(table2.admit(route: "r", source: source, limits: limits, now: 0) == .admitted) }
        for index in 0..<1000 {
            let source = SourceKey(.v4(0x0C00_0000 + UInt32(index)), limits: limits)
            _ = table2.admit(route: "r", source: source, limits: limits, now: 0)
            table2.release(route: "r", source: source, now: 0)
        }
        #expect(table2.count <= 61)
        for source in open { #expect(table2.active(route: "r", source: source) == 1) }
        // Once a quiet source's bucket is full and its log interval over, release drops it.
        var table3 = SourceTable(logIntervalNanoseconds: Self.second)
        let one = SourceKey(Self.good, limits: limits)
        #expect(table3.admit(route: "r", source: one, limits: limits, now: 0) == .admitted)
        table3.release(route: "r", source: one, now: 2 * Self.second)
        #expect(table3.count == 0)
    }

    @Test(
        "Admission: a source over its limit is refused as source, the route keeps room for others, tickets release the source"
    )
    func admission() throws {
        let clock = NIOLockedValueBox<UInt64>(0)
        let admission = Admission(ids: ConnectionIDs(), now: { clock.withLockedValue { $0 } })
        let limits = SourceLimits(maximumConnections: 2, newConnectionsPerSecond: 100)
        func admit(_ source: IPAddress) -> Result<Admission.Ticket, Admission.Refusal> {
            admission.admit(route: "r", routeLimit: 4, globalLimit: 10, source: source, sourceLimits: limits)
        }
        let first = try admit(Self.flood).get()
        _ = try admit(Self.flood).get()
        let key = SourceKey(Self.flood, limits: limits)
        #expect(throws: Never.self) { try admit(Self.good).get() }
        guard case .failure(.source(.concurrent, key, log: true, suppressed: 0)) = admit(Self.flood) else {
            Issue.record("expected a source refusal")
            return
        }
        _ = try admit(IPAddress("10.0.0.8")!).get()
        guard case .failure(.cap) = admit(IPAddress("10.0.0.9")!) else {
            Issue.record("expected the route cap")
            return
        }
        #expect(admission.active == 4)
        admission.release(first)
        clock.withLockedValue { $0 += 1_000_000 }
        #expect(throws: Never.self) { try admit(Self.flood).get() }
        _ = admission.beginDraining()
        guard case .failure(.draining) = admit(Self.good) else {
            Issue.record("expected draining")
            return
        }
    }
}

extension SourceKey {
    /// The same address under other limits' prefix (a test helper).
    fileprivate func widened(to limits: SourceLimits) -> SourceKey { SourceKey(self.address, limits: limits) }
}
