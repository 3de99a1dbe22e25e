import NIOCore
import RPCWire

/// Endpoint-mapper paths: the reply rewriter over the framed PDUs (as the fragments of one call),
/// and the ept_map/ept_lookup stub parsers over the raw input, in NDR32 and NDR64.
///
/// Invariants checked by trapping: the rewriter never changes a fragment's length, every TCP tower
/// it saw was either rewritten or redacted, and a reply with every tower redacted still parses,
/// with the same towers and not one non-zero byte left in a floor that may reveal an endpoint.
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
                checkRedactingEveryTower(fragments: fragments, operation: operation, syntax: syntax, limits: limits)
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

private func checkRedactingEveryTower(
    fragments: [RawPDU],
    operation: EPMOperation,
    syntax: NDRSyntax,
    limits: WireLimits
) {
    guard
        let result = try? EPMReplyRewriter.rewriteTowers(
            fragments: fragments,
            operation: operation,
            syntax: syntax,
            limits: limits,
            decide: { _ in .redact }
        )
    else { return }
    var stub = ByteBuffer()
    for fragment in result.fragments {
        // Fragments the rewriter accepted but the full parser refuses prove nothing here.
        guard case .response(var response)? = try? fragment.parse(limits: limits).body else { return }
        stub.writeBuffer(&response.stub)
    }
    let endianness = fragments[0].header.endianness
    let towers: [ProtocolTower]
    do {
        switch operation {
        case .map:
            towers = try stub.readEPMMapResponse(syntax: syntax, endianness: endianness, limits: limits).towers
                .compactMap { $0 }
        default:
            towers = try stub.readEPMLookupResponse(syntax: syntax, endianness: endianness, limits: limits).entries
                .compactMap(\.tower)
        }
    } catch {
        fatalError("a reply with every tower redacted no longer parses: \(error)")
    }
    guard towers.count == result.redactedTowers else {
        fatalError("\(result.redactedTowers) towers redacted, \(towers.count) in the reply")
    }
    for tower in towers {
        for floor in tower.floors where floor.revealsEndpoint && floor.rhs.contains(where: { $0 != 0 }) {
            fatalError("a redacted tower still names an endpoint: \(floor)")
        }
    }
}
