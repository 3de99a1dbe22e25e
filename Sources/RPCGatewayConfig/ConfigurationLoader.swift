import Foundation
public import RPCGateway
import Yams

/// Turns a YAML configuration file into validated ``GatewaySettings``.
///
/// Every problem in the file is collected in one pass and thrown together as a
/// ``ConfigurationError``, each with the line and column of the offending key or value. Unknown
/// keys are errors: a misspelt key in a security policy must not be silently ignored.
public enum ConfigurationLoader {
    /// Reads and parses the file at `path`. Problems name the file as `path`.
    ///
    /// - Throws: ``ConfigurationError``.
    public static func load(path: String) throws -> GatewaySettings {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(problems: [
                ConfigurationProblem(
                    fileName: path,
                    keyPath: "",
                    line: nil,
                    column: nil,
                    message: "cannot read the configuration file: \(error.localizedDescription)"
                )
            ])
        }
        return try self.parse(yaml: text, fileName: path)
    }

    /// Parses configuration text. `fileName` is only used in problem descriptions.
    ///
    /// - Throws: ``ConfigurationError``.
    public static func parse(yaml: String, fileName: String = "<config>") throws -> GatewaySettings {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(problems: [self.problem(for: error, fileName: fileName)])
        }
        var decoder = ConfigurationDecoder(fileName: fileName)
        guard let root else {
            decoder.report(
                "the configuration is empty; it needs at least a routes list and the policies they use",
                at: .root,
                mark: nil
            )
            throw ConfigurationError(problems: decoder.problems)
        }
        guard let settings = decoder.decodeSettings(root) else {
            throw ConfigurationError(problems: self.inDocumentOrder(decoder.problems))
        }
        return settings
    }

    /// Sorted by line and column; problems without a location keep their order at the end.
    static func inDocumentOrder(_ problems: [ConfigurationProblem]) -> [ConfigurationProblem] {
        problems.enumerated().sorted { a, b in
            let left = (a.element.line ?? Int.max, a.element.column ?? 0, a.offset)
            let right = (b.element.line ?? Int.max, b.element.column ?? 0, b.offset)
            return left < right
        }.map(\.element)
    }

    /// A YAML syntax error as a located problem.
    static func problem(for error: any Error, fileName: String) -> ConfigurationProblem {
        func located(_ message: String, _ position: (line: Int, column: Int)?) -> ConfigurationProblem {
            ConfigurationProblem(
                fileName: fileName,
                keyPath: "",
                line: position?.line,
                column: position?.column,
                message: message
            )
        }
        guard let error = error as? YamlError else {
            return located("cannot parse the YAML: \(error)", nil)
        }
        switch error {
        case .scanner(let context, let problem, let mark, _),
            .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            var message = "YAML syntax error: \(problem)"
            if let context {
                message += " (\(context.text) started at line \(context.mark.line))"
            }
            return located(message, (mark.line, mark.column))
        case .reader(let problem, let offset, _, let yaml):
            return located(
                "YAML syntax error: \(problem)",
                offset.flatMap { Self.position(atCharacterOffset: $0, in: yaml) }
            )
        case .duplicatedKeysInMapping(let duplicates, let context):
            // Yams orders the keys, and places the error at the first of them, by comparing nodes:
            // scalars by their text alone (so `!a x` and `!b x` tie) and collections (`? [a]`)
            // not totally at all. The keys are sorted here, and where Yams's order has ties the
            // error has no position, so one text always gives one message (found by RPCConfigFuzz).
            let collectionKey = "<uncovertable>"  // Yams's name for a key that is not a scalar
            let names = duplicates.map { $0 == collectionKey ? "(a key that is not a string)" : $0 }
            let keys = Suggestions.list(Array(Set(names)).sorted(), conjunction: "and")
            let orderIsStable = !duplicates.contains(collectionKey) && Set(duplicates).count == duplicates.count
            let position = orderIsStable ? (context.mark.line, context.mark.column) : nil
            return located("duplicate key \(keys) in the same mapping", position)
        default:
            return located("cannot parse the YAML: \(error)", nil)
        }
    }

    private static func position(atCharacterOffset offset: Int, in text: String) -> (line: Int, column: Int)? {
        var line = 1
        var column = 1
        for (index, character) in text.enumerated() {
            if index == offset { return (line, column) }
            if character == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return nil
    }
}
