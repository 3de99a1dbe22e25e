import ArgumentParser
import Foundation
import NIOPosix
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire

/// `rpcgate init --server ADDRESS`: asks the server's endpoint mapper what it registered and
/// writes a starter configuration for a gateway in front of it.
struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a server's endpoint mapper what it offers and write a starter configuration for it.",
        discussion: """
            Lists the server's endpoints (ept_lookup, as `rpcgate endpoints` does) and writes one route \
            in front of it: the interfaces domain members need from a domain controller that the server \
            registered (epmapper, samr, lsarpc, netlogon, dssetup, drsuapi) allowed, BackupKey audited \
            at privacy level, every other registered interface listed in a commented-out rule, the \
            hardening profiles (block-dcsync, block-coercion, block-remote-exec) first, default deny, \
            and the admin listener on loopback. The file passes `rpcgate check-config` as written; \
            then `rpcgate run --config FILE`.
            """
    )

    @Option(help: "The server (domain controller): an IPv4 address or DNS name.")
    var server: String

    @Option(help: "The server's endpoint-mapper port.")
    var serverPort: Int = 135

    @Option(name: .shortAndLong, help: "Write the configuration to this file (default: standard output).")
    var output: String?

    @Flag(help: "Replace --output if it exists.")
    var force = false

    @Option(help: "The address the gateway listens on (an IPv4 or IPv6 literal).")
    var listen: String = "0.0.0.0"

    @Option(help: "The gateway's endpoint-mapper port.")
    var epmPort: Int = 135

    @Option(help: "The gateway's port range, FIRST-LAST.")
    var ports: String = "50000-50099"

    @Option(help: "The route's name (also the policy's).")
    var route: String = "dc"

    @Option(help: "The admin listener (status page, /metrics), HOST:PORT.")
    var admin: String = "127.0.0.1:9135"

    @Option(help: "Seconds allowed for connecting and the whole exchange.")
    var timeout: Int = 10

    func validate() throws {
        guard (1...65535).contains(self.serverPort) else { throw ValidationError("--server-port must be 1-65535") }
        guard (1...65535).contains(self.epmPort) else { throw ValidationError("--epm-port must be 1-65535") }
        guard self.timeout > 0 else { throw ValidationError("--timeout must be at least 1 second") }
        guard !self.route.isEmpty, self.route.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        else {
            throw ValidationError("--route: letters, digits, - and _ only")
        }
    }

    func run() async throws {
        if let output = self.output, !self.force, FileManager.default.fileExists(atPath: output) {
            printError("rpcgate: \(output) exists; choose another --output or add --force")
            throw ExitCode(2)
        }
        let upstream: IPv4Address
        do {
            upstream = try GatewayServer.resolveIPv4(self.server)
        } catch {
            printError("rpcgate: \(error)")
            throw ExitCode(1)
        }
        let mapperClient = EndpointMapperClient(
            configuration: EndpointMapperClient.Configuration(timeout: .seconds(self.timeout))
        )
        let listing: EndpointMapperClient.Listing
        do {
            listing = try await mapperClient.lookUpAll(
                host: "\(upstream)",
                port: self.serverPort,
                group: MultiThreadedEventLoopGroup.singleton
            )
        } catch {
            printError("rpcgate: endpoint mapper \(upstream):\(self.serverPort): \(error)")
            throw ExitCode(1)
        }
        let starter = StarterConfiguration(
            server: self.server,
            serverAddress: "\(upstream)",
            serverPort: self.serverPort,
            entries: listing.entries,
            truncated: listing.truncated,
            listen: self.listen,
            epmPort: self.epmPort,
            ports: self.ports,
            route: self.route,
            admin: self.admin,
            version: RPCGateVersion.current
        )
        let text = starter.yaml
        // Whatever the options, the file must load: a problem here is a bug, reported as such.
        do {
            _ = try ConfigurationLoader.parse(yaml: text, fileName: self.output ?? "<init>")
        } catch let error as ConfigurationError {
            for problem in error.problems {
                printError("rpcgate: the generated configuration has a problem: \(problem)")
            }
            throw ExitCode(2)
        }
        guard let output = self.output else {
            print(text, terminator: "")
            return
        }
        do {
            try Data(text.utf8).write(
                to: URL(fileURLWithPath: output),
                options: self.force ? [] : [.withoutOverwriting]
            )
        } catch {
            printError("rpcgate: cannot write \(output): \(error.localizedDescription)")
            throw ExitCode(1)
        }
        printError(
            "rpcgate: wrote \(output): \(starter.allowed.count) interfaces allowed, \(starter.audited.count) audited, "
                + "\(starter.others.count) commented out (\(listing.entries.count) endpoint-mapper entries). "
                + "Next: rpcgate check-config \(output), then rpcgate run --config \(output)"
        )
    }
}

/// The text `rpcgate init` writes, from an endpoint mapper's entries. Pure, so tests feed it
/// entries and load the result.
struct StarterConfiguration {
    /// What domain members and admin tools need from a DC, in this order.
    static let neededByClients = ["epmapper", "samr", "lsarpc", "netlogon", "dssetup", "drsuapi"]
    /// Allowed only audited and at privacy level (the DPAPI backup key).
    static let auditedAtPrivacy = ["backupkey"]

    /// One interface the server registered over TCP.
    struct Interface: Hashable {
        var syntax: SyntaxID
        /// The catalog name, when the catalog knows the UUID and major version.
        var name: String?
        var annotation: String

        /// How a rule names it: the catalog name, or `UUID@MAJOR.MINOR`.
        var ruleEntry: String {
            self.name ?? "\(self.syntax.uuid)@\(self.syntax.majorVersion).\(self.syntax.minorVersion)"
        }

        var comment: String {
            var parts: [String] = []
            if let name = self.name, let entry = InterfaceCatalog.named(name) {
                parts.append("\(entry.summary) (\(entry.specification))")
            } else {
                parts.append("not in the catalog")
            }
            if !self.annotation.isEmpty { parts.append("annotation \"\(self.annotation)\"") }
            return parts.joined(separator: "; ")
        }
    }

    var server: String
    var serverAddress: String
    var serverPort: Int
    var entries: [EPMEntry]
    var truncated: Bool
    var listen: String
    var epmPort: Int
    var ports: String
    var route: String
    var admin: String
    var version: String

    /// Distinct interfaces registered over ncacn_ip_tcp, in the order the server listed them.
    var interfaces: [Interface] {
        var seen: Set<SyntaxID> = []
        var result: [Interface] = []
        for entry in self.entries {
            guard let tower = entry.tower, tower.isNCACNIPTCP, let syntax = tower.interface, !seen.contains(syntax)
            else { continue }
            seen.insert(syntax)
            result.append(
                Interface(
                    syntax: syntax,
                    name: InterfaceCatalog.name(of: syntax),
                    annotation: Self.printable(entry.annotationText)
                )
            )
        }
        return result
    }

    var allowed: [Interface] {
        let registered = self.interfaces
        var result: [Interface] = []
        for name in Self.neededByClients {
            if name == "epmapper" {
                // Always: clients resolve endpoints through the gateway's own endpoint mapper.
                let entry = registered.first { $0.name == name }
                result.append(entry ?? Interface(syntax: .endpointMapper, name: name, annotation: ""))
            } else {
                result += registered.filter { $0.name == name }
            }
        }
        return result
    }

    var audited: [Interface] { self.interfaces.filter { $0.name.map(Self.auditedAtPrivacy.contains) ?? false } }

    var others: [Interface] {
        let listed = Set(self.allowed.map(\.syntax)).union(self.audited.map(\.syntax))
        var names: Set<String> = []
        return self.interfaces.filter { interface in
            guard !listed.contains(interface.syntax) else { return false }
            // A catalog name matches every minor version: list it once.
            if let name = interface.name { return names.insert(name).inserted }
            return true
        }
    }

    var yaml: String {
        let tcpEntries = self.entries.filter { $0.tower?.isNCACNIPTCP ?? false }.count
        var lines: [String] = []
        lines += [
            "# rpcgate configuration for \(self.server)"
                + (self.server == self.serverAddress ? "" : " (\(self.serverAddress))")
                + ", written by `rpcgate init` \(self.version)",
            "# from what its endpoint mapper (port \(self.serverPort)) registered: \(self.entries.count) entries, "
                + "\(tcpEntries) over TCP, \(self.interfaces.count) distinct interfaces over TCP"
                + (self.truncated ? " (the listing was cut short: the server has more)." : "."),
            "#",
            "# Next:",
            "#   1. Review the policy below: the allow rule, the commented-out interfaces, `sources`, and the",
            "#      other domain controllers under block-dcsync's except_sources.",
            "#   2. rpcgate check-config THIS-FILE",
            "#   3. rpcgate run --config THIS-FILE   (or install it as /etc/rpcgate/rpcgate.yaml and",
            "#      `systemctl enable --now rpcgate`; see docs/DEPLOYMENT.md)",
            "#",
            "# Learning first: to see what your clients really use before enforcing, set `default: audit` in",
            "# the policy (nothing is then refused but the profiles), uncomment `audit:` at the end, run a few",
            "# days, and allow what the audit log shows (`rpcgate explain` tells which rule decides a call).",
            "# Then set `default: deny` again.",
            "",
            "routes:",
            "  - name: \(self.route)",
            "    listen: \(self.listen)",
            "    epm_port: \(self.epmPort)",
            "    # advertise: 192.0.2.10       # the address written into endpoints, when clients reach the gateway through NAT",
            "    upstream: \(Self.quotedIfNeeded(self.server))",
            "    upstream_epm_port: \(self.serverPort)",
            "    # Gateway ports the server's dynamic RPC ports are mapped into; open exactly these (and",
            "    # epm_port) in the firewall in front of the gateway.",
            "    ports: \(self.ports)",
            "    policy: \(self.route)",
            "",
            "policies:",
            "  \(self.route):",
            "    default: deny",
            "    rules:",
            "      # Known abuse paths first: they win over the allow rules below (docs/POLICY.md).",
            "      - profile: block-dcsync",
            "        # except_sources: [10.0.0.11/32, 10.0.0.12/32]   # your other DCs replicate with DRSGetNCChanges",
            "      - profile: block-coercion",
            "      - profile: block-remote-exec",
        ]
        if !self.audited.isEmpty {
            lines += [
                "      # BackupKey hands out the domain's DPAPI backup key: logged, and only over an encrypted connection.",
                "      - action: audit",
                "        interfaces: [\(self.audited.map(\.ruleEntry).joined(separator: ", "))]",
                "        min_auth_level: privacy",
            ]
        }
        lines += [
            "      # What domain members and admin tools need from a domain controller (those this server registered).",
            "      - action: allow",
            "        interfaces:",
        ]
        for interface in self.allowed {
            lines.append("          - \(Self.padded(interface.ruleEntry, 38)) # \(interface.comment)")
        }
        lines.append("        # sources: [10.0.0.0/8]                  # your client networks")
        if self.others.isEmpty {
            lines.append("      # The server registered nothing else over TCP.")
        } else {
            lines += [
                "      # Also registered by this server, refused by the default (deny). To allow some, uncomment",
                "      # the rule and the lines you need (each line stands alone):",
                "      # - action: allow",
                "      #   interfaces:",
            ]
            for interface in self.others {
                lines.append("      #     - \(Self.padded(interface.ruleEntry, 38)) # \(interface.comment)")
            }
        }
        lines += [
            "",
            "# Status page at /, /status.json, /metrics (Prometheus), /healthz and /readyz; loopback only.",
            "admin:",
            "  listen: \(self.admin)",
            "  # token_file: /etc/rpcgate/admin.token   # require `Authorization: Bearer TOKEN`",
            "",
            "logging:",
            "  format: text          # or logfmt, json",
            "  level: info",
            "",
            "# One JSON line per bind decision and per denied or audited call, with the rule that decided.",
            "# audit:",
            "#   file: /var/log/rpcgate/audit.jsonl",
            "",
        ]
        return lines.joined(separator: "\n")
    }

    /// Annotation text safe for a one-line YAML comment: printable characters, at most 60.
    static func printable(_ text: String) -> String {
        let kept = text.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7f && $0 != "\"" }
        return String(String.UnicodeScalarView(kept.prefix(60)))
    }

    /// A host name or address as a YAML scalar: quoted when YAML could read it as something else.
    static func quotedIfNeeded(_ text: String) -> String {
        let plain = text.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" }
        return plain && !text.isEmpty ? text : "\"\(text.replacingOccurrences(of: "\"", with: ""))\""
    }

    static func padded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}
