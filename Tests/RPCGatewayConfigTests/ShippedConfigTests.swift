import Foundation
import RPCGatewayConfig
import Testing

/// Every example under config/ must load as shipped. The edge and core examples name PEM files
/// that `deploy/tls/make-test-ca.sh` creates, so for them the only acceptable problems are those
/// files being absent.
@Suite("Shipped configuration examples")
struct ShippedConfigTests {
    static let configDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("config")

    @Test(arguments: ["rpcgate.example.yaml", "rpcgate.dc-hardened.yaml", "rpcgate.transparent.yaml"])
    func loadsWithoutProblems(file: String) throws {
        _ = try ConfigurationLoader.load(path: Self.configDirectory.appendingPathComponent(file).path)
    }

    @Test(arguments: ["rpcgate.edge.yaml", "rpcgate.core.yaml"])
    func tunnelExamplesOnlyLackTheirCertificates(file: String) throws {
        do {
            _ = try ConfigurationLoader.load(path: Self.configDirectory.appendingPathComponent(file).path)
        } catch let error as ConfigurationError {
            let unexpected = error.problems.filter {
                !($0.message.contains("does not exist")
                    && ($0.message.hasSuffix(".pem does not exist") || $0.message.hasSuffix(".key does not exist")
                        || $0.keyPath.hasPrefix("audit")))
            }
            #expect(unexpected.isEmpty, "\(unexpected)")
        }
    }
}
