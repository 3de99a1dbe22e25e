import NIOCore
import RPCWire

// The wire operations the gateway applies to PDUs it did not write, which the 10-minute coverage
// run of this target (docs/SECURITY.md, "Fuzzing") found unreached from here: fragment
// reassembly, the bind_ack secondary-address rewrite and the refusals built in answer to a
// client's PDU. Each checks an invariant by trapping.

/// Feeds the framed PDUs to a ``FragmentAssembler``, as the endpoint-mapper role does with one
/// direction of a connection: a completed call is FIRST_FRAG..LAST_FRAG of one call id and packet
/// type, within the limits; after an error the assembler is ready for a new call.
func fuzzFragmentAssembly(_ fragments: [RawPDU], limits: WireLimits) {
    var assembler = FragmentAssembler(limits: limits)
    for fragment in fragments {
        let completed: [RawPDU]?
        do {
            completed = try assembler.append(fragment)
        } catch {
            guard !assembler.isCollecting, assembler.bufferedStubBytes == 0 else {
                fatalError("FragmentAssembler kept a partial call after an error: \(error)")
            }
            continue
        }
        guard let call = completed else { continue }
        guard let first = call.first, let last = call.last, !assembler.isCollecting else {
            fatalError("FragmentAssembler returned an empty call or kept collecting after LAST_FRAG")
        }
        guard call.count <= limits.maximumFragmentsPerCall,
            first.header.flags.contains(.firstFragment), last.header.flags.contains(.lastFragment),
            call.allSatisfy({
                $0.header.callID == first.header.callID && $0.header.packetType == first.header.packetType
            })
        else {
            fatalError("FragmentAssembler returned an inconsistent call of \(call.count) fragments")
        }
    }
}

/// Replaces the secondary address of every acknowledgement among `pdus`, as a mapped connection
/// does: a rewritten PDU re-parses naming the new port; one with an auth verifier is never changed.
func fuzzSecondaryAddressRewrite(_ pdus: [PDU], limits: WireLimits) {
    for pdu in pdus {
        let port = UInt16(truncatingIfNeeded: pdu.header.callID)
        switch pdu.replacingSecondaryAddress(port: port) {
        case .unchanged:
            continue
        case .authenticated:
            guard pdu.authVerifier != nil || pdu.header.authLength != 0 else {
                fatalError("secondary address refused as authenticated without a verifier")
            }
        case .rewritten(let rewritten):
            guard pdu.authVerifier == nil else { fatalError("rewrote a PDU that carries an auth verifier") }
            guard var bytes = try? rewritten.serialized(),
                let raw = try? bytes.readRawPDU(limits: limits),
                let again = try? raw.parse(limits: limits)
            else {
                // The longer address may push a fragment over the limit; that is refused, not sent.
                continue
            }
            switch again.body {
            case .bindAck(let ack), .alterContextResponse(let ack):
                guard ack.secondaryAddress == BindAckPDU.secondaryAddress(port: port) else {
                    fatalError("rewritten secondary address reads back as \(ack.secondaryAddress)")
                }
            default:
                fatalError("a rewritten acknowledgement re-parsed as \(again.packetType)")
            }
        }
    }
}

/// Builds the refusals the gateway sends in answer to client PDUs: a bind or alter_context is
/// answered with a rejection (bind_nak or an acknowledgement rejecting every context) and a request
/// with a fault; each must serialize and re-parse as the packet type the client expects.
func fuzzRefusals(_ pdus: [PDU], limits: WireLimits) {
    for pdu in pdus {
        switch pdu.body {
        case .bind, .alterContext:
            guard let rejection = PDU.bindRejection(answering: pdu) else { continue }
            guard var bytes = try? rejection.serialized(),
                let raw = try? bytes.readRawPDU(limits: limits),
                let again = try? raw.parse(limits: limits),
                again.header.callID == pdu.header.callID
            else {
                fatalError("the rejection of \(pdu.packetType) does not re-parse: \(rejection)")
            }
        case .request(let request):
            let fault = PDU.fault(
                callID: pdu.header.callID,
                contextID: request.contextID,
                status: .accessDenied,
                dataRepresentation: pdu.header.dataRepresentation
            )
            guard var bytes = try? fault.serialized(),
                let raw = try? bytes.readRawPDU(limits: limits),
                let again = try? raw.parse(limits: limits),
                again.packetType == .fault, again.header.callID == pdu.header.callID
            else {
                fatalError("the fault answering call \(pdu.header.callID) does not re-parse")
            }
        default:
            continue
        }
    }
}

/// The gateway decides most PDUs on two peeks (``RawPDU/requestHeader`` and
/// ``RawPDU/securityTrailer``) and forwards the bytes unparsed: on every PDU that parses, a peek
/// must say what the full parse says.
func fuzzPeeks(_ fragments: [RawPDU], limits: WireLimits) {
    for raw in fragments {
        let peekedRequest = raw.requestHeader
        let peekedTrailer = raw.securityTrailer
        guard let pdu = try? raw.parse(limits: limits) else { continue }
        if case .request(let request) = pdu.body {
            guard
                peekedRequest
                    == RequestHeaderFields(
                        allocationHint: request.allocationHint,
                        contextID: request.contextID,
                        opnum: request.opnum
                    )
            else {
                fatalError("request peek \(String(describing: peekedRequest)) disagrees with the parse")
            }
        }
        if let verifier = pdu.authVerifier {
            guard let trailer = peekedTrailer, trailer.authType == verifier.authType,
                trailer.authLevel == verifier.authLevel, trailer.contextID == verifier.contextID,
                trailer.reserved == verifier.reserved
            else {
                fatalError("security trailer peek \(String(describing: peekedTrailer)) disagrees with the parse")
            }
        }
    }
}
