/// One thing wrong with a configuration file, located as precisely as the YAML allows.
///
/// ```
/// config.yaml:12:5: routes[0].ports: "50100-50000" is not a port range (LOW-HIGH, LOW <= HIGH, 1-65535)
/// ```
public struct ConfigurationProblem: Hashable, Sendable, CustomStringConvertible {
    /// The file the problem is in, as given to the loader (`<config>` for in-memory text).
    public var fileName: String
    /// Where in the document: `routes[0].ports`, `policies.dc.rules[2].interfaces[1]`. Empty for
    /// problems with the document as a whole (syntax errors, an empty file).
    public var keyPath: String
    /// 1-based line of the offending key or value.
    public var line: Int?
    /// 1-based column (counted in Unicode scalars, as libyaml does).
    public var column: Int?
    public var message: String

    public init(fileName: String = "<config>", keyPath: String, line: Int?, column: Int?, message: String) {
        self.fileName = fileName
        self.keyPath = keyPath
        self.line = line
        self.column = column
        self.message = message
    }

    /// `file:line:column: key.path: message`, the shape compilers use, so editors can jump to it.
    public var description: String {
        var location = self.fileName
        if let line = self.line {
            location += ":\(line)"
            if let column = self.column { location += ":\(column)" }
        }
        if self.keyPath.isEmpty {
            return "\(location): \(self.message)"
        }
        return "\(location): \(self.keyPath): \(self.message)"
    }
}

/// A configuration that cannot be used, with every problem found in one pass.
public struct ConfigurationError: Error, CustomStringConvertible {
    /// In document order; problems that have no line come last.
    public var problems: [ConfigurationProblem]

    public init(problems: [ConfigurationProblem]) {
        self.problems = problems
    }

    /// One problem per line.
    public var description: String {
        self.problems.map(\.description).joined(separator: "\n")
    }
}
