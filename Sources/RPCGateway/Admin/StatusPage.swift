import RPCPolicy
import RPCWire

/// The status page served at `/`: server-rendered HTML, no script, refreshed by the browser
/// every ``refreshSeconds``. Every value that comes from the configuration or the wire (route
/// names, addresses, interface names, rule text, error messages) goes through ``HTML/escape(_:)``.
package enum StatusPage {
    package static let refreshSeconds = 10
    /// `Content-Security-Policy` of the page: no scripts, no external anything, inline styles only.
    package static let contentSecurityPolicy =
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    package static func render(_ status: GatewayStatus) -> String {
        var html = HTMLBuilder()
        html.raw(
            """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta http-equiv="refresh" content="\(Self.refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>rpcgate status</title>
            <style>\(Self.style)</style>
            </head>
            <body>

            """
        )
        Self.header(status, into: &html)
        Self.routes(status, into: &html)
        Self.mappings(status, into: &html)
        Self.connections(status, into: &html)
        Self.traffic(status, into: &html)
        Self.denials(status, into: &html)
        html.raw(
            """
            <footer>Also: <a href="/status.json">status.json</a> · <a href="/readyz">readyz</a> · \
            <a href="/metrics">metrics</a> · <a href="/healthz">healthz</a>. \
            This page reloads every \(Self.refreshSeconds) s.</footer>
            </body>
            </html>

            """
        )
        return html.output
    }

    // MARK: - Sections

    private static func header(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        html.raw("<header><h1>rpcgate</h1><span class=\"version\">")
        html.text(status.version)
        html.raw("</span> ")
        if status.draining {
            html.raw("<span class=\"badge bad\">draining</span>")
        } else if status.readiness.isReady {
            html.raw("<span class=\"badge good\">ready</span>")
        } else {
            html.raw("<span class=\"badge bad\">not ready</span>")
        }
        html.raw("</header>\n<dl class=\"summary\">")
        html.definition("Generated", status.generatedAt.rfc3339)
        html.definition("Started", "\(status.startedAt.rfc3339) (up \(DurationText.short(status.uptime)))")
        html.definition("Connections", "\(status.activeConnections) open (limit \(status.maximumConnections))")
        html.definition("Routes", "\(status.routes.count)")
        html.raw("</dl>\n")
        let failing = status.readiness.failingRoutes
        if !failing.isEmpty {
            html.raw("<ul class=\"problems\">")
            for route in failing {
                html.raw("<li>route <b>")
                html.text(route.name)
                html.raw("</b>: ")
                html.text(route.problem ?? "not ready")
                html.raw("</li>")
            }
            html.raw("</ul>\n")
        }
    }

    private static func routes(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        html.raw("<section id=\"routes\"><h2>Routes</h2>\n")
        html.tableHead([
            "Route", "EPM listener", "Port range", "Mapped", "Upstream", "Policy", "Connections", "Upstream probe",
        ])
        for route in status.routes {
            html.raw("<tr>")
            html.raw("<td class=\"name\">")
            html.text(route.name)
            if route.mode != "mapped" {
                html.raw("<br><span class=\"mode\">")
                html.text(route.mode)
                html.raw("</span>")
            }
            html.raw("</td>")
            html.cell(route.epmListener, className: "mono")
            html.cell("\(route.ports.lowerBound)-\(route.ports.upperBound)", className: "mono")
            html.cell("\(route.mappings.count) / \(route.ports.count)", className: "num")
            var upstream = HostPort.text(route.upstreamHost, route.upstreamEPMPort)
            if route.upstreamHost != "\(route.upstreamAddress)" { upstream += " (\(route.upstreamAddress))" }
            if route.mode == "transparent" { upstream = "servers in " + route.servers.joined(separator: ", ") }
            if let via = route.via { upstream += " via core \(via)" }
            html.cell(upstream, className: "mono")
            let rules = route.ruleCount == 1 ? "1 rule" : "\(route.ruleCount) rules"
            html.cell("\(route.policyName) (\(rules), default \(route.policyDefault.rawValue))")
            html.cell("\(route.activeConnections) / \(route.maximumConnections)", className: "num")
            let probe = route.readiness
            if !probe.probed {
                html.cell("not probed (servers vary per connection)")
            } else if probe.ready {
                let age = probe.lastSuccessAge.map { "reachable, \(DurationText.short($0)) ago" } ?? "reachable"
                html.cell(age, className: "good")
            } else {
                html.cell(probe.problem ?? "not ready", className: "bad")
            }
            html.raw("</tr>\n")
        }
        html.raw("</tbody></table></section>\n")
    }

    private static func mappings(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        let total = status.routes.reduce(0) { $0 + $1.mappings.count }
        html.raw("<section id=\"mappings\"><h2>Port mappings (\(total))</h2>\n")
        guard total > 0 else {
            html.raw("<p class=\"empty\">No gateway port is mapped.</p></section>\n")
            return
        }
        html.tableHead(["Route", "Gateway port", "Server endpoint", "Connections", "Idle", "Released in"])
        for route in status.routes {
            for mapping in route.mappings {
                html.raw("<tr>")
                html.cell(route.name, className: "name")
                html.cell("\(mapping.gatewayPort)", className: "mono num gateway-port")
                html.cell("\(mapping.server)", className: "mono")
                html.cell("\(mapping.activeConnections)", className: "num")
                html.cell(mapping.idle.map(DurationText.short) ?? "in use", className: "num")
                html.cell(mapping.expiresIn.map(DurationText.short) ?? "-", className: "num")
                html.raw("</tr>\n")
            }
        }
        html.raw("</tbody></table></section>\n")
    }

    private static func connections(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        html.raw("<section id=\"connections\"><h2>Open connections (\(status.activeConnections))</h2>\n")
        guard !status.connections.isEmpty else {
            html.raw("<p class=\"empty\">No spliced connection.")
            Self.unlisted(status, into: &html)
            html.raw("</p></section>\n")
            return
        }
        html.tableHead([
            "#", "Route", "Listener", "Client", "Gateway port", "Server", "Interfaces", "Auth", "Age", "Idle",
            "Bytes in", "Bytes out", "Call",
        ])
        for connection in status.connections {
            html.raw("<tr>")
            html.cell("\(connection.id)", className: "num")
            html.cell(connection.route, className: "name")
            html.cell(connection.listener.rawValue)
            html.cell(connection.client, className: "mono")
            html.cell(connection.gatewayPort.map { "\($0)" } ?? "-", className: "mono num")
            html.cell("\(connection.server)", className: "mono")
            html.cell(connection.interfaceNames.isEmpty ? "-" : connection.interfaceNames.joined(separator: ", "))
            html.cell("\(connection.authLevel)")
            html.cell(DurationText.short(connection.age), className: "num")
            html.cell(DurationText.short(connection.idle), className: "num")
            html.cell("\(connection.bytesFromClient)", className: "num")
            html.cell("\(connection.bytesFromServer)", className: "num")
            html.cell(connection.callInFlight ? "in flight" : "-")
            html.raw("</tr>\n")
        }
        html.raw("</tbody></table>")
        if status.connectionsOmitted > 0 || status.connectionsAwaitingBind > 0 {
            html.raw("<p class=\"empty\">")
            Self.unlisted(status, into: &html)
            html.raw("</p>")
        }
        html.raw("</section>\n")
    }

    /// The open connections that are not in the table, in a sentence.
    private static func unlisted(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        if status.connectionsAwaitingBind > 0 {
            let count = status.connectionsAwaitingBind
            html.raw(" \(count) waiting for \(count == 1 ? "its" : "their") first bind (routed by its interface).")
        }
        if status.connectionsOmitted > 0 {
            html.raw(" \(status.connectionsOmitted) more not listed.")
        }
    }

    /// Top interfaces and sources, seen and refused: what a learning policy shows at a glance.
    private static func traffic(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        let traffic = status.traffic
        html.raw("<section id=\"traffic\"><h2>Top interfaces and sources</h2>\n")
        guard !traffic.interfaces.isEmpty else {
            html.raw("<p class=\"empty\">No bind or call decided since start.</p></section>\n")
            return
        }
        func interfaceRows(_ title: String, _ rows: [TrafficSummary.Row<SyntaxID>], other: TrafficSummary.Counts) {
            html.raw("<h3>")
            html.text(title)
            html.raw("</h3>\n")
            html.tableHead(["Interface", "UUID", "Seen", "Denied"])
            for row in rows {
                html.raw("<tr>")
                html.cell(InterfaceCatalog.name(of: row.key) ?? "unknown", className: "interface")
                html.cell("\(row.key.uuid) v\(row.key.majorVersion).\(row.key.minorVersion)", className: "mono")
                html.cell("\(row.counts.seen)", className: "num")
                html.cell("\(row.counts.denied)", className: row.counts.denied > 0 ? "num bad" : "num")
                html.raw("</tr>\n")
            }
            if other.seen > 0 {
                html.raw("<tr><td>(others)</td><td></td>")
                html.cell("\(other.seen)", className: "num")
                html.cell("\(other.denied)", className: "num")
                html.raw("</tr>\n")
            }
            html.raw("</tbody></table>\n")
        }
        func sourceRows(_ title: String, _ rows: [TrafficSummary.Row<String>], other: TrafficSummary.Counts) {
            html.raw("<h3>")
            html.text(title)
            html.raw("</h3>\n")
            html.tableHead(["Source", "Seen", "Denied"])
            for row in rows {
                html.raw("<tr>")
                html.cell(row.key, className: "mono")
                html.cell("\(row.counts.seen)", className: "num")
                html.cell("\(row.counts.denied)", className: row.counts.denied > 0 ? "num bad" : "num")
                html.raw("</tr>\n")
            }
            if other.seen > 0 {
                html.raw("<tr><td>(others)</td>")
                html.cell("\(other.seen)", className: "num")
                html.cell("\(other.denied)", className: "num")
                html.raw("</tr>\n")
            }
            html.raw("</tbody></table>\n")
        }
        interfaceRows("Interfaces seen", traffic.interfaces, other: traffic.otherInterfaces)
        sourceRows("Sources seen", traffic.sources, other: traffic.otherSources)
        if !traffic.deniedInterfaces.isEmpty {
            interfaceRows("Interfaces denied", traffic.deniedInterfaces, other: TrafficSummary.Counts())
            sourceRows("Sources denied", traffic.deniedSources, other: TrafficSummary.Counts())
        }
        html.raw("</section>\n")
    }

    private static func denials(_ status: GatewayStatus, into html: inout HTMLBuilder) {
        html.raw("<section id=\"denials\"><h2>Recent refused binds and calls")
        html.raw(" (last \(status.denials.count) of \(status.denialsTotal))</h2>\n")
        guard !status.denials.isEmpty else {
            html.raw("<p class=\"empty\">Nothing refused since start.</p></section>\n")
            return
        }
        html.tableHead([
            "Time (UTC)", "Route", "Event", "Client", "Identity", "Interface", "UUID", "Opnum", "Auth", "Decision",
            "Rule",
        ])
        for denial in status.denials {
            html.raw("<tr>")
            html.cell(denial.time.rfc3339, className: "mono")
            html.cell(denial.route, className: "name")
            html.cell(denial.event.rawValue)
            html.cell(denial.clientText, className: "mono")
            html.cell(denial.identityText)
            html.cell(denial.interfaceName, className: "interface")
            html.cell(
                "\(denial.interface.uuid) v\(denial.interface.majorVersion).\(denial.interface.minorVersion)",
                className: "mono"
            )
            html.cell(denial.opnum.map { "\($0)" } ?? "-", className: "num")
            html.cell("\(denial.authLevel)")
            html.cell(denial.decision.action.rawValue, className: "bad")
            html.cell(denial.ruleDescription)
            html.raw("</tr>\n")
        }
        html.raw("</tbody></table></section>\n")
    }

    // MARK: - Style

    private static let style = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:1.5em;color:#1d2430;background:#f7f8fa}\
        header{display:flex;align-items:baseline;gap:.6em}h1{margin:0;font-size:1.6em}\
        .version{color:#667}h2{font-size:1.15em;margin:1.6em 0 .5em}h3{font-size:1em;margin:1em 0 .4em}\
        .badge{padding:.1em .6em;border-radius:1em;font-weight:600;font-size:.9em}\
        .badge.good{background:#d7f5dd;color:#11602a}.badge.bad{background:#fde2e1;color:#9b1c1c}\
        dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;margin:1em 0}\
        dl.summary dt{color:#667}dl.summary dd{margin:0}\
        ul.problems{background:#fde2e1;color:#9b1c1c;padding:.6em 2em;border-radius:.4em}\
        table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);width:100%}\
        th,td{border-bottom:1px solid #e3e6ea;padding:.35em .6em;text-align:left;vertical-align:top}\
        th{background:#eef1f5;font-weight:600;white-space:nowrap}\
        td.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.93em;white-space:nowrap}\
        td.num{text-align:right;font-variant-numeric:tabular-nums}td.name{font-weight:600}\
        .mode{font-weight:400;color:#667;font-size:.85em}td.good{color:#11602a}td.bad{color:#9b1c1c;font-weight:600}\
        p.empty{color:#667;font-style:italic}footer{margin-top:2em;color:#667;font-size:.9em}
        """
}

/// Minimal HTML writer: `text` escapes, `raw` does not (callers pass only constant markup).
struct HTMLBuilder {
    private(set) var output = ""

    mutating func raw(_ markup: String) {
        self.output += markup
    }

    mutating func text(_ value: String) {
        self.output += HTML.escape(value)
    }

    mutating func cell(_ value: String, className: String? = nil) {
        if let className {
            self.output += "<td class=\"\(className)\">"
        } else {
            self.output += "<td>"
        }
        self.text(value)
        self.output += "</td>"
    }

    mutating func definition(_ term: String, _ value: String) {
        self.output += "<dt>"
        self.text(term)
        self.output += "</dt><dd>"
        self.text(value)
        self.output += "</dd>"
    }

    mutating func tableHead(_ columns: [String]) {
        self.output += "<table><thead><tr>"
        for column in columns {
            self.output += "<th>"
            self.text(column)
            self.output += "</th>"
        }
        self.output += "</tr></thead><tbody>\n"
    }
}

package enum HTML {
    /// Escapes text for HTML element content and quoted attribute values: `&`, `<`, `>`, `"`, `'`.
    package static func escape(_ value: String) -> String {
        var result = ""
        result.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
