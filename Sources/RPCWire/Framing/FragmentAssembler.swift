/// Collects the fragments of one call, FIRST_FRAG through LAST_FRAG (C706 12.6.3.1 `pfc_flags`).
///
/// A pure value: the gateway feeds it the PDUs of one direction of a call and gets the complete list
/// back when LAST_FRAG arrives, ready for ``EPMReplyRewriter``. It holds at most
/// ``WireLimits/maximumReassembledStubLength`` stub bytes in at most
/// ``WireLimits/maximumFragmentsPerCall`` fragments. Requests, responses and faults are accepted;
/// every fragment of a call must have the first one's packet type, call id and data representation.
///
/// After an error the partial call is dropped, so the assembler is ready for a new call; the caller
/// normally closes the connection instead.
public struct FragmentAssembler: Sendable {
    public let limits: WireLimits
    private var fragments: [RawPDU] = []
    private var stubBytes = 0

    public init(limits: WireLimits = WireLimits()) {
        self.limits = limits
    }

    /// Whether a call has started and not yet finished.
    public var isCollecting: Bool { !self.fragments.isEmpty }

    /// The call id being collected, if any.
    public var callID: UInt32? { self.fragments.first?.header.callID }

    /// Stub bytes buffered so far.
    public var bufferedStubBytes: Int { self.stubBytes }

    /// Adds one PDU. Returns the whole call when `pdu` carries LAST_FRAG, `nil` while more are due.
    ///
    /// Throws ``RPCWireError/Code/fragmentSequence`` when a call does not start with FIRST_FRAG, a
    /// later fragment repeats it, or the call id, packet type or data representation changes;
    /// ``RPCWireError/Code/unexpectedPacketType`` for PDUs that are not calls;
    /// ``RPCWireError/Code/reassemblyTooLarge`` past the limits.
    public mutating func append(_ pdu: RawPDU) throws -> [RawPDU]? {
        do {
            return try self.appendChecked(pdu)
        } catch {
            self.reset()
            throw error
        }
    }

    /// Drops any partial call.
    public mutating func reset() {
        self.fragments.removeAll()
        self.stubBytes = 0
    }

    private mutating func appendChecked(_ pdu: RawPDU) throws -> [RawPDU]? {
        let header = pdu.header
        switch header.packetType {
        case .request, .response, .fault:
            break
        default:
            throw RPCWireError(.unexpectedPacketType, "\(header.packetType) is not fragmented call data")
        }
        if let first = self.fragments.first?.header {
            guard header.callID == first.callID else {
                throw RPCWireError(
                    .fragmentSequence,
                    "call_id \(header.callID) interleaved with unfinished call \(first.callID)"
                )
            }
            guard header.packetType == first.packetType else {
                throw RPCWireError(.fragmentSequence, "\(header.packetType) fragment inside a \(first.packetType) call")
            }
            guard header.dataRepresentation == first.dataRepresentation else {
                throw RPCWireError(.fragmentSequence, "data representation changes inside call \(first.callID)")
            }
            guard !header.flags.contains(.firstFragment) else {
                throw RPCWireError(.fragmentSequence, "FIRST_FRAG repeated inside call \(first.callID)")
            }
        } else {
            guard header.flags.contains(.firstFragment) else {
                throw RPCWireError(.fragmentSequence, "call \(header.callID) starts without FIRST_FRAG")
            }
        }
        guard self.fragments.count < self.limits.maximumFragmentsPerCall else {
            throw RPCWireError(
                .reassemblyTooLarge,
                "more than \(self.limits.maximumFragmentsPerCall) fragments in call \(header.callID)"
            )
        }
        let (_, length) = try pdu.callStubRange()
        guard length <= self.limits.maximumReassembledStubLength - self.stubBytes else {
            throw RPCWireError(
                .reassemblyTooLarge,
                "call \(header.callID) exceeds \(self.limits.maximumReassembledStubLength) stub bytes"
            )
        }
        self.stubBytes += length
        self.fragments.append(pdu)
        guard header.flags.contains(.lastFragment) else { return nil }
        let complete = self.fragments
        self.reset()
        return complete
    }
}
