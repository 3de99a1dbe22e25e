import Foundation
public import RPCGateway

/// Gateway listeners inside Linux's ephemeral port range (`net.ipv4.ip_local_port_range`, 32768-60999
/// by default) collide with outgoing connections: the kernel may pick a listener's port as the
/// source port of any connection the host makes (the gateway's own upstream connections included),
/// and then the listener cannot bind (at start, or after a reload). Ports listed in
/// `net.ipv4.ip_local_reserved_ports` are never picked. `check-config` and `run` warn about the
/// rest; the fix is in docs/DEPLOYMENT.md ("Reserve the gateway's ports").
public enum EphemeralPorts {
    /// The kernel settings that decide a collision.
    public struct KernelRanges: Hashable, Sendable {
        public var ephemeral: ClosedRange<UInt16>
        public var reserved: [ClosedRange<UInt16>]

        public init(ephemeral: ClosedRange<UInt16>, reserved: [ClosedRange<UInt16>]) {
            self.ephemeral = ephemeral
            self.reserved = reserved
        }
    }

    /// `ip_local_port_range`: two numbers separated by white space (`32768\t60999`).
    public static func parseEphemeralRange(_ text: String) -> ClosedRange<UInt16>? {
        let numbers = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { UInt16($0) }
        guard numbers.count == 2, numbers[0] <= numbers[1] else { return nil }
        return numbers[0]...numbers[1]
    }

    /// `ip_local_reserved_ports`: a comma-separated list of ports and `LOW-HIGH` ranges, or empty.
    /// Entries that do not parse are skipped (they reserve nothing we could rely on).
    public static func parseReservedPorts(_ text: String) -> [ClosedRange<UInt16>] {
        text.split(separator: ",").compactMap { item -> ClosedRange<UInt16>? in
            let entry = item.trimmingCharacters(in: .whitespacesAndNewlines)
            let bounds = entry.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0) }
            switch bounds.count {
            case 1: return bounds[0].map { $0...$0 }
            case 2:
                guard let low = bounds[0], let high = bounds[1], low <= high else { return nil }
                return low...high
            default: return nil
            }
        }
    }

    /// The parts of `ports` inside the ephemeral range and not reserved, as ranges in ascending
    /// order; empty when `ports` are safe.
    public static func unreservedEphemeral(_ ports: ClosedRange<UInt16>, kernel: KernelRanges) -> [ClosedRange<UInt16>]
    {
        let low = max(ports.lowerBound, kernel.ephemeral.lowerBound)
        let high = min(ports.upperBound, kernel.ephemeral.upperBound)
        guard low <= high else { return [] }
        var pieces: [ClosedRange<UInt16>] = []
        var start: UInt16? = nil
        var port = low
        while true {
            let reserved = kernel.reserved.contains { $0.contains(port) }
            if reserved {
                if let first = start { pieces.append(first...(port - 1)) }
                start = nil
            } else if start == nil {
                start = port
            }
            if port == high { break }
            port += 1
        }
        if let first = start { pieces.append(first...high) }
        return pieces
    }

    /// One warning per route whose listeners (its `ports`, a transparent route's
    /// `server_ports_listen`, its endpoint-mapper port) are in the ephemeral range and not reserved.
    public static func warnings(for settings: GatewaySettings, kernel: KernelRanges) -> [String] {
        var warnings: [String] = []
        for route in settings.routes {
            var exposed: [ClosedRange<UInt16>] = Self.unreservedEphemeral(route.ports, kernel: kernel)
            exposed += Self.unreservedEphemeral(route.epmPort...route.epmPort, kernel: kernel)
            guard !exposed.isEmpty else { continue }
            let text = exposed.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            let what = route.serverPortsListen != nil ? "server_ports_listen" : "ports"
            warnings.append(
                "route \(route.name): \(what) \(text.joined(separator: ",")) inside the ephemeral port range "
                    + "\(kernel.ephemeral.lowerBound)-\(kernel.ephemeral.upperBound) "
                    + "(net.ipv4.ip_local_port_range) and not in net.ipv4.ip_local_reserved_ports: an outgoing "
                    + "connection may take such a port and the listener then cannot bind. Reserve them: "
                    + "sysctl -w net.ipv4.ip_local_reserved_ports=\(text.joined(separator: ",")) "
                    + "(and in /etc/sysctl.d/; docs/DEPLOYMENT.md)"
            )
        }
        return warnings
    }

    /// The running kernel's ranges from `/proc/sys/net/ipv4`; `nil` when they cannot be read (not
    /// Linux, or no procfs).
    public static func kernelRanges(directory: String = "/proc/sys/net/ipv4") -> KernelRanges? {
        guard
            let rangeText = try? String(contentsOfFile: directory + "/ip_local_port_range", encoding: .utf8),
            let ephemeral = Self.parseEphemeralRange(rangeText)
        else { return nil }
        let reservedText = (try? String(contentsOfFile: directory + "/ip_local_reserved_ports", encoding: .utf8)) ?? ""
        return KernelRanges(ephemeral: ephemeral, reserved: Self.parseReservedPorts(reservedText))
    }
}
