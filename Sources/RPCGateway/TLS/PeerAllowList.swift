import SwiftASN1
import X509

/// A name a certificate carries in its subject alternative names.
package enum PeerName: Hashable, Sendable, CustomStringConvertible {
    case dns(String)
    /// A URI, such as a SPIFFE ID (`spiffe://example.test/edge1`).
    case uri(String)

    package var description: String {
        switch self {
        case .dns(let name): return "DNS:\(name)"
        case .uri(let uri): return "URI:\(uri)"
        }
    }

    /// The DNS and URI names of a DER certificate's subject alternative names (other kinds, such
    /// as IP addresses and e-mail addresses, are not identities here). Throws when the certificate
    /// or its SAN extension cannot be decoded.
    package static func names(ofDERCertificate der: [UInt8]) throws -> [PeerName] {
        let certificate = try Certificate(derEncoded: der)
        guard let alternatives = try certificate.extensions.subjectAlternativeNames else { return [] }
        return alternatives.compactMap { name in
            switch name {
            case .dnsName(let dns): return .dns(dns)
            case .uniformResourceIdentifier(let uri): return .uri(uri)
            default: return nil
            }
        }
    }
}

/// Which edge gateways a core accepts: a certificate is allowed when one of its subject
/// alternative names equals an entry.
///
/// An entry with `://` is a URI and must match a URI SAN exactly (SPIFFE IDs are case-sensitive);
/// any other entry is a DNS name and matches a DNS SAN case-insensitively, ignoring one trailing
/// dot. There are no wildcards on either side: a certificate for `*.example.test` matches only the
/// entry `*.example.test` literally, so one leaked wildcard certificate cannot stand in for a
/// named edge.
package struct PeerAllowList: Hashable, Sendable {
    package var entries: [String]

    package init(_ entries: [String]) {
        self.entries = entries
    }

    /// The first entry `names` satisfies, or `nil` when none does.
    package func match(_ names: [PeerName]) -> String? {
        for entry in self.entries {
            let isURI = entry.contains("://")
            for name in names {
                switch name {
                case .uri(let uri) where isURI:
                    if uri == entry { return entry }
                case .dns(let dns) where !isURI:
                    if Self.normalizedDNS(dns) == Self.normalizedDNS(entry) { return entry }
                default:
                    continue
                }
            }
        }
        return nil
    }

    private static func normalizedDNS(_ name: String) -> String {
        let lower = name.lowercased()
        return lower.hasSuffix(".") ? String(lower.dropLast()) : lower
    }
}
