import RPCGateway
import RPCGatewayConfig

/// The YAML configuration loader (`ConfigurationLoader.parse(yaml:)`) on fuzz text.
///
/// Invariants checked by trapping, beyond "no trap in Yams, libyaml or the decoder":
/// - a rejected file throws ``ConfigurationError`` (never another error) with at least one
///   problem, and every located problem has a line and column of at least 1, within the text;
/// - parsing is deterministic (the same text gives the same settings or the same problems);
/// - accepted settings keep what validation promises: at least one route, unique route names, no
///   empty name or upstream, an EPM port outside the route's own range, at most 10,000 ports per
///   route, positive connection caps.
enum ConfigHarness {
    static func run(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let first = Self.load(text)
        let second = Self.load(text)
        guard first == second else {
            fatalError("parsing the same text twice gave different results:\n\(first)\n\(second)")
        }
        switch first {
        case .accepted(let settings):
            Self.check(settings)
        case .rejected(let problems):
            guard !problems.isEmpty else { fatalError("ConfigurationError without problems") }
            // libyaml counts \r, \r\n, NEL, LS and PS as line breaks too: bound by the scalar count.
            let bound = text.unicodeScalars.count + 2
            for problem in problems {
                if let line = problem.line, !(1...bound).contains(line) {
                    fatalError("problem at line \(line) of a \(bound - 2)-scalar text: \(problem)")
                }
                if let column = problem.column, !(1...bound).contains(column) {
                    fatalError("problem at column \(column) of a \(bound - 2)-scalar text: \(problem)")
                }
            }
        }
    }

    enum Outcome: Equatable {
        case accepted(GatewaySettings)
        case rejected([ConfigurationProblem])
    }

    static func load(_ text: String) -> Outcome {
        do {
            return .accepted(try ConfigurationLoader.parse(yaml: text, fileName: "fuzz.yaml"))
        } catch let error as ConfigurationError {
            return .rejected(error.problems)
        } catch {
            fatalError("parse(yaml:) threw \(type(of: error)), not a ConfigurationError: \(error)")
        }
    }

    static func check(_ settings: GatewaySettings) {
        guard !settings.routes.isEmpty else { fatalError("accepted a configuration without routes") }
        var names: Set<String> = []
        for route in settings.routes {
            guard !route.name.isEmpty, names.insert(route.name).inserted else {
                fatalError("accepted an empty or repeated route name \"\(route.name)\"")
            }
            guard !route.upstreamHost.isEmpty else { fatalError("route \(route.name): empty upstream accepted") }
            guard !route.ports.contains(route.epmPort) else {
                fatalError("route \(route.name): EPM port \(route.epmPort) inside its ports \(route.ports)")
            }
            guard route.ports.count <= 10_000 else {
                fatalError("route \(route.name): \(route.ports.count) ports accepted")
            }
            guard route.maximumConnections > 0 else {
                fatalError("route \(route.name): max_connections \(route.maximumConnections) accepted")
            }
        }
        guard settings.limits.maximumConnections > 0 else {
            fatalError("limits.max_connections \(settings.limits.maximumConnections) accepted")
        }
    }
}
