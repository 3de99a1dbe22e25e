import Testing

@testable import rpcgate

@Suite("rpcgate --version")
struct VersionTests {
    @Test("the release and the commit: `0.1.0 (commit 1a2b3c4d5e6f)`, `-dirty`, or `unknown commit`")
    func format() throws {
        let full = RPCGateVersion.full
        #expect(full.hasPrefix(RPCGateVersion.current + " ("))
        let commit = try #require(full.split(separator: "(").last?.dropLast())
        if commit != "unknown commit" {
            #expect(commit.hasPrefix("commit "))
            let hash = commit.dropFirst("commit ".count).split(separator: "-").first ?? ""
            #expect(hash.count >= 7 && hash.allSatisfy(\.isHexDigit), "\(full)")
        }
    }
}
