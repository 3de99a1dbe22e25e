package import Metrics
import NIOConcurrencyHelpers
package import NIOSSL

/// Builds the TLS contexts of the inter-gateway hop from PEM files: TLS 1.3 by default, 1.2 at
/// least, peer certificates verified against the configured CA in both directions.
///
/// `NIOSSLContext` is immutable: a reload builds new contexts and swaps them in for new
/// connections; established connections keep the context they were made with.
package enum TLSContexts {
    /// The core side: our chain and key, and a client certificate from the CA is required.
    package static func server(_ files: TLSFiles) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: try Self.chain(files.certificate),
            privateKey: try Self.key(files.privateKey),
            trustRoots: try Self.trustRoots(files.certificateAuthority)
        )
        configuration.minimumTLSVersion = .tlsv12
        return try Self.context(configuration, files)
    }

    /// The edge side: our chain and key, and the core's certificate must chain to the CA and carry
    /// `serverName` (hostname verification).
    package static func client(_ files: TLSFiles) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        configuration.trustRoots = try Self.trustRoots(files.certificateAuthority)
        configuration.certificateChain = try Self.chain(files.certificate)
        configuration.privateKey = try Self.key(files.privateKey)
        return try Self.context(configuration, files)
    }

    private static func chain(_ path: String) throws -> [NIOSSLCertificateSource] {
        do {
            let certificates = try NIOSSLCertificate.fromPEMFile(path)
            guard !certificates.isEmpty else {
                throw GatewayStartError(description: "TLS certificate \(path): no certificate in the file")
            }
            return certificates.map { .certificate($0) }
        } catch let error as GatewayStartError {
            throw error
        } catch {
            throw GatewayStartError(description: "TLS certificate \(path): \(error)")
        }
    }

    private static func key(_ path: String) throws -> NIOSSLPrivateKeySource {
        do {
            return .privateKey(try NIOSSLPrivateKey(file: path, format: .pem))
        } catch {
            throw GatewayStartError(description: "TLS key \(path): \(error)")
        }
    }

    private static func trustRoots(_ path: String) throws -> NIOSSLTrustRoots {
        do {
            let certificates = try NIOSSLCertificate.fromPEMFile(path)
            guard !certificates.isEmpty else {
                throw GatewayStartError(description: "TLS CA \(path): no certificate in the file")
            }
            return .certificates(certificates)
        } catch let error as GatewayStartError {
            throw error
        } catch {
            throw GatewayStartError(description: "TLS CA \(path): \(error)")
        }
    }

    private static func context(_ configuration: TLSConfiguration, _ files: TLSFiles) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw GatewayStartError(
                description:
                    "TLS context from \(files.certificate), \(files.privateKey), \(files.certificateAuthority): \(error)"
            )
        }
    }
}

/// The outcome of one inter-gateway TLS handshake (`result` label of
/// `rpcgate_tls_handshakes_total`): a stable, low-cardinality code.
package enum TLSHandshakeResult: String, Hashable, Sendable, CaseIterable {
    case success
    /// The peer's certificate does not chain to the configured CA (or is expired, or malformed).
    case badCertificate = "bad_certificate"
    /// The peer presented no certificate.
    case noCertificate = "no_certificate"
    /// The certificate is valid but none of its SANs is allowed (core), or it does not carry the
    /// expected server name (edge).
    case peerNotAllowed = "peer_not_allowed"
    /// The bytes were not TLS (a plain TCP client on the TLS port).
    case notTLS = "not_tls"
    /// The handshake did not complete in time.
    case timeout
    /// The connection closed during the handshake, or any other failure.
    case failed

    /// Classifies a handshake error from swift-nio-ssl by BoringSSL's reason text.
    package static func classify(_ error: any Error) -> TLSHandshakeResult {
        let text = String(describing: error).uppercased()
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST") || text.contains("UNKNOWN_PROTOCOL")
            || text.contains("RECORD_LENGTH") || text.contains("UNEXPECTED_RECORD") || text.contains("PACKET_LENGTH")
        {
            return .notTLS
        }
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") {
            return .noCertificate
        }
        if text.contains("HOSTNAME") || text.contains("CANNOTMATCHULABEL") {
            return .peerNotAllowed
        }
        if text.contains("CERTIFICATE") || text.contains("UNKNOWN_CA") || text.contains("VERIFY") {
            return .badCertificate
        }
        return .failed
    }
}

/// `rpcgate_tls_handshakes_total{peer,result}`, with counters cached per label set. `peer` is a
/// configured name (the edge's peer name, or the core's matched allow-list entry) or `unknown`.
package final class TLSMetrics: Sendable {
    package static let handshakesTotal = "rpcgate_tls_handshakes_total"
    private let factory: any MetricsFactory
    private let counters: NIOLockedValueBox<[String: Counter]> = NIOLockedValueBox([:])

    package init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    package func handshake(peer: String, result: TLSHandshakeResult) {
        let key = "\(peer)\u{0}\(result.rawValue)"
        let counter = self.counters.withLockedValue { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: Self.handshakesTotal,
                dimensions: [("peer", peer), ("result", result.rawValue)],
                factory: self.factory
            )
            counters[key] = counter
            return counter
        }
        counter.increment()
    }
}
