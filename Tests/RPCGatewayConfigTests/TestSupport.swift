import Foundation
import RPCGateway
import RPCGatewayConfig
import Testing

/// The problems `yaml` produces; records a failure if it loads.
func problems(
    _ yaml: String,
    sourceLocation: SourceLocation = #_sourceLocation
) -> [ConfigurationProblem] {
    do {
        let settings = try ConfigurationLoader.parse(yaml: yaml, fileName: "test.yaml")
        Issue.record("expected problems, but the configuration loaded: \(settings)", sourceLocation: sourceLocation)
        return []
    } catch let error as ConfigurationError {
        return error.problems
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        return []
    }
}

/// The single problem whose key path is `keyPath`; records a failure unless there is exactly one.
func problem(
    at keyPath: String,
    in yaml: String,
    sourceLocation: SourceLocation = #_sourceLocation
) -> ConfigurationProblem? {
    let all = problems(yaml, sourceLocation: sourceLocation)
    let matching = all.filter { $0.keyPath == keyPath }
    guard matching.count == 1 else {
        Issue.record(
            "expected one problem at \(keyPath), got:\n\(all.map(\.description).joined(separator: "\n"))",
            sourceLocation: sourceLocation
        )
        return nil
    }
    return matching[0]
}

/// The repository's `config/` directory.
let configDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .appendingPathComponent("config")

/// A minimal valid file: one route, one policy. Tests append to it or replace lines.
let minimalConfig = """
    routes:
      - name: dc1
        listen: 10.99.0.1
        upstream: 10.99.0.2
        ports: 50000-50099
        policy: dc
    policies:
      dc:
        default: deny
        rules:
          - action: allow
            interfaces: [samr]

    """
