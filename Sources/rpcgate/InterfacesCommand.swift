import ArgumentParser
import Foundation
import RPCPolicy
import RPCWire

/// `rpcgate interfaces`: the interface catalog that rules may name.
struct Interfaces: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the interface catalog: the names rules may use, with UUID, version and specification."
    )

    @Flag(help: "Print JSON (an array of objects) for scripts.")
    var json = false

    /// One catalog entry as printed with `--json`.
    struct Entry: Codable, Equatable {
        var name: String
        var uuid: String
        var version: String
        var specification: String
        var summary: String

        init(_ interface: CatalogInterface) {
            self.name = interface.name
            self.uuid = "\(interface.syntax.uuid)"
            self.version = "\(interface.syntax.majorVersion).\(interface.syntax.minorVersion)"
            self.specification = interface.specification
            self.summary = interface.summary
        }
    }

    func run() throws {
        let entries = InterfaceCatalog.all.map(Entry.init)
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(entries), as: UTF8.self))
        } else {
            for line in Self.table(entries) { print(line) }
        }
    }

    /// Aligned columns under a header; the last column is not padded.
    static func table(_ entries: [Entry]) -> [String] {
        let rows =
            [["NAME", "UUID", "VERSION", "SPECIFICATION", "SUMMARY"]]
            + entries.map { [$0.name, $0.uuid, $0.version, $0.specification, $0.summary] }
        let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            var line = ""
            for (column, cell) in row.enumerated() {
                if column < widths.count {
                    line += cell + String(repeating: " ", count: widths[column] - cell.count + 2)
                } else {
                    line += cell
                }
            }
            return line
        }
    }
}
