import ArgumentParser
import Foundation
import NIOPosix
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire

/// `rpcgate endpoints`: what the route's server has registered with its endpoint mapper, and what
/// the gateway would reveal of each endpoint to a client.
struct Endpoints: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the endpoints registered with a route's server and what the gateway would reveal of each.",
        discussion: """
            Asks the route's upstream endpoint mapper (ept_lookup, all elements, paged) and prints every \
            registered endpoint with the gateway port it would be advertised as and the policy verdict \
            for the --from client (a bind at privacy level: the test the gateway applies before revealing \
            an endpoint). Gateway ports are simulated with a fresh allocator over the route's range, in \
            reply order; a running gateway assigns them on demand.
            """
    )

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    @Option(help: "The route whose server to ask.")
    var route: String

    @Option(help: "The client address the verdicts are for.")
    var from: String = "0.0.0.0"

    @Flag(help: "Print a JSON array instead of a table.")
    var json = false

    @Option(help: "Seconds allowed for connecting and the whole exchange.")
    var timeout: Int = 10

    func run() async throws {
        let settings = try loadSettingsOrExit(self.config)
        guard let route = settings.routes.first(where: { $0.name == self.route }) else {
            printError(
                "rpcgate: no route \"\(self.route)\" in \(self.config) (routes: \(settings.routes.map(\.name).joined(separator: ", ")))"
            )
            throw ExitCode(2)
        }
        guard let client = IPAddress(self.from) else {
            printError("rpcgate: --from \(self.from) is not an IPv4 or IPv6 address")
            throw ExitCode(2)
        }
        guard self.timeout > 0 else {
            printError("rpcgate: --timeout must be at least 1 second")
            throw ExitCode(2)
        }
        let upstream: IPv4Address
        do {
            upstream = try GatewayServer.resolveIPv4(route.upstreamHost)
        } catch {
            printError("rpcgate: \(error)")
            throw ExitCode(1)
        }
        let endpointMapper = "\(upstream):\(route.upstreamEPMPort)"
        let mapperClient = EndpointMapperClient(
            configuration: EndpointMapperClient.Configuration(
                timeout: .seconds(self.timeout),
                limits: settings.wireLimits
            )
        )
        let listing: EndpointMapperClient.Listing
        do {
            listing = try await mapperClient.lookUpAll(
                host: "\(upstream)",
                port: Int(route.upstreamEPMPort),
                group: MultiThreadedEventLoopGroup.singleton
            )
        } catch {
            printError("rpcgate: endpoint mapper \(endpointMapper): \(error)")
            throw ExitCode(1)
        }
        let inventory = EndpointInventory(
            entries: listing.entries,
            route: route,
            upstreamAddress: upstream,
            client: client,
            limits: settings.wireLimits
        )
        if self.json {
            try self.printJSON(inventory)
        } else {
            self.printTable(inventory, listing: listing, route: route, endpointMapper: endpointMapper, client: client)
        }
    }

    // MARK: - Table

    private func printTable(
        _ inventory: EndpointInventory,
        listing: EndpointMapperClient.Listing,
        route: RouteSettings,
        endpointMapper: String,
        client: IPAddress
    ) {
        var status = "last status \(listing.finalStatus)"
        if listing.finalStatus == .endpointNotRegistered { status += " ept_s_not_registered: end of list" }
        if listing.truncated { status = "stopped after \(listing.pages) pages: the server has more" }
        print(
            "route \(route.name): endpoint mapper \(endpointMapper), \(listing.entries.count) entries "
                + "in \(listing.pages) page\(listing.pages == 1 ? "" : "s") (\(status))"
        )
        print(
            "verdicts for client \(client) (bind at privacy level, policy \(route.policy.name)); "
                + "GATEWAY simulated with a fresh allocator over \(route.ports.lowerBound)-\(route.ports.upperBound) "
                + "in reply order (a running gateway maps on demand)"
        )
        print("")
        let header = ["INTERFACE", "UUID", "VERSION", "PROTOCOL", "ENDPOINT", "GATEWAY", "VERDICT", "ANNOTATION"]
        let rows = inventory.rows.map { row in
            [
                row.interfaceName ?? "-",
                row.interface.map { "\($0.uuid)" } ?? "-",
                row.interface.map { "\($0.majorVersion).\($0.minorVersion)" } ?? "-",
                row.protocolSequence.rawValue,
                row.endpoint ?? "-",
                Self.gatewayText(row.gateway),
                Self.verdictText(row),
                row.entry.annotationText.isEmpty ? "-" : row.entry.annotationText,
            ]
        }
        for line in Self.aligned([header] + rows) { print(line) }
    }

    /// Left-aligned columns two spaces apart; the last column is not padded.
    static func aligned(_ rows: [[String]]) -> [String] {
        guard let columns = rows.first?.count else { return [] }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (index, cell) in row.enumerated() where index < columns - 1 {
                widths[index] = max(widths[index], cell.count)
            }
        }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == columns - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ")
        }
    }

    static func gatewayText(_ view: EndpointInventory.GatewayView) -> String {
        switch view {
        case .mapped(let port): return "\(port)"
        case .endpointMapper(let port): return "\(port) (epm)"
        case .hidden: return "hidden"
        case .foreignHost: return "redacted (other host)"
        case .portNotAllowed: return "redacted (port outside server_ports)"
        case .exhausted: return "none free"
        case .unchanged: return "not rewritten"
        }
    }

    static func verdictText(_ row: EndpointInventory.Row) -> String {
        guard let verdict = row.verdict else { return "-" }
        if row.isEndpointMapper { return "allow (endpoint mapper)" }
        guard let origin = verdict.origin else { return "\(verdict.action) (default)" }
        if let profile = origin.profile { return "\(verdict.action) (rule \(origin.index), profile \(profile))" }
        return "\(verdict.action) (rule \(origin.index))"
    }

    // MARK: - JSON

    private struct JSONRow: Encodable {
        var interface: String?
        var uuid: String?
        var version: String?
        var annotation: String
        var `protocol`: String
        var endpoint: String?
        var host: String?
        var gateway: String
        var gatewayPort: Int?
        var verdict: String?
        var rule: Int?
        var profile: String?

        enum CodingKeys: String, CodingKey {
            case interface, uuid, version, annotation, `protocol`, endpoint, host, gateway
            case gatewayPort = "gateway_port"
            case verdict, rule, profile
        }

        /// Writes every key, `null` included, so consumers see a fixed shape.
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(self.interface, forKey: .interface)
            try container.encode(self.uuid, forKey: .uuid)
            try container.encode(self.version, forKey: .version)
            try container.encode(self.annotation, forKey: .annotation)
            try container.encode(self.protocol, forKey: .protocol)
            try container.encode(self.endpoint, forKey: .endpoint)
            try container.encode(self.host, forKey: .host)
            try container.encode(self.gateway, forKey: .gateway)
            try container.encode(self.gatewayPort, forKey: .gatewayPort)
            try container.encode(self.verdict, forKey: .verdict)
            try container.encode(self.rule, forKey: .rule)
            try container.encode(self.profile, forKey: .profile)
        }
    }

    private func printJSON(_ inventory: EndpointInventory) throws {
        let rows = inventory.rows.map { row in
            let (gateway, port): (String, Int?) =
                switch row.gateway {
                case .mapped(let port): ("mapped", Int(port))
                case .endpointMapper(let port): ("endpoint_mapper", Int(port))
                case .hidden: ("hidden", nil)
                case .foreignHost: ("foreign_host", nil)
                case .portNotAllowed: ("port_not_allowed", nil)
                case .exhausted: ("exhausted", nil)
                case .unchanged: ("unchanged", nil)
                }
            return JSONRow(
                interface: row.interfaceName,
                uuid: row.interface.map { "\($0.uuid)" },
                version: row.interface.map { "\($0.majorVersion).\($0.minorVersion)" },
                annotation: row.entry.annotationText,
                protocol: row.protocolSequence.rawValue,
                endpoint: row.endpoint,
                host: row.host.map { "\($0)" },
                gateway: gateway,
                gatewayPort: port,
                verdict: row.verdict.map { $0.action.rawValue },
                rule: row.verdict?.origin.map(\.index),
                profile: row.verdict?.origin?.profile
            )
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(rows)
        print(String(decoding: data, as: UTF8.self))
    }
}
