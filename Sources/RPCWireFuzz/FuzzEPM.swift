import NIOCore
import RPCWire

/// Endpoint-mapper paths: the reply rewriter over the framed PDUs (as the fragments of one call),
/// and the ept_map/ept_lookup stub parsers over the raw input, in NDR32 and NDR64.
///
/// Invariants checked by trapping: the rewriter never changes a fragment's length, and every
/// TCP tower it saw was either rewritten or redacted.
func fuzzEndpointMapper(input: ByteBuffer, fragments: [RawPDU], limits: WireLimits) {
    let replacement = TCPEndpoint(address: IPv4Address(192, 0, 2, 1), port: 50000)
    if !fragments.isEmpty {
        for operation in [EPMOperation.map, .lookup] {
            for syntax in [NDRSyntax.ndr32, .ndr64] {
                var seen = 0
                guard
                    let result = try? EPMReplyRewriter.rewrite(
                        fragments: fragments,
                        operation: operation,
                        syntax: syntax,
                        limits: limits,
                        endpointFor: { tower in
                            seen += 1
                            return tower.endpoint.port % 2 == 0 ? replacement : nil
                        }
                    )
                else { continue }
                guard result.fragments.count == fragments.count,
                    zip(result.fragments, fragments).allSatisfy({ $0.bytes.readableBytes == $1.bytes.readableBytes })
                else { fatalError("the rewriter changed a fragment's length") }
                guard result.rewrittenTowers + result.redactedTowers == seen else {
                    fatalError(
                        "towers seen \(seen) != rewritten \(result.rewrittenTowers) + redacted \(result.redactedTowers)"
                    )
                }
            }
        }
    }
    for syntax in [NDRSyntax.ndr32, .ndr64] {
        var map = input
        _ = try? map.readEPMMapRequest(syntax: syntax, limits: limits)
        var mapResponse = input
        _ = try? mapResponse.readEPMMapResponse(syntax: syntax, limits: limits)
        var lookup = input
        _ = try? lookup.readEPMLookupRequest(syntax: syntax, limits: limits)
        var lookupResponse = input
        _ = try? lookupResponse.readEPMLookupResponse(syntax: syntax, limits: limits)
    }
    var tower = input
    _ = try? tower.readProtocolTower(length: input.readableBytes, limits: limits)
}
