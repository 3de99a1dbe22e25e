public import NIOCore

/// The body of a `bind` (PTYPE 11) or `alter_context` (PTYPE 14) PDU (C706 12.6.4.3, 12.6.4.1).
public struct BindPDU: Hashable, Sendable {
    public var maxTransmitFragment: UInt16
    public var maxReceiveFragment: UInt16
    public var associationGroupID: UInt32
    public var contexts: [PresentationContext]
    /// Bytes after the context list and before the auth padding (normally none), kept verbatim.
    public var trailingBytes: ByteBuffer

    public init(
        maxTransmitFragment: UInt16,
        maxReceiveFragment: UInt16,
        associationGroupID: UInt32,
        contexts: [PresentationContext],
        trailingBytes: ByteBuffer = ByteBuffer()
    ) {
        self.maxTransmitFragment = maxTransmitFragment
        self.maxReceiveFragment = maxReceiveFragment
        self.associationGroupID = associationGroupID
        self.contexts = contexts
        self.trailingBytes = trailingBytes
    }

    /// Fixed part: max_xmit_frag, max_recv_frag, assoc_group_id, n_context_elem + 3 reserved bytes.
    static let fixedLength = 12
    /// p_cont_id, n_transfer_syn, reserved, abstract syntax.
    static let contextElementFixedLength = 24
}

extension ByteBuffer {
    /// Parses a bind/alter_context body; `self` is exactly the body (after the common header,
    /// before any auth padding).
    mutating func readBindPDUBody(endianness: Endianness, limits: WireLimits) throws -> BindPDU {
        guard
            let (maxTransmit, maxReceive, group, count, _, _) = self.readMultipleIntegers(
                endianness: endianness,
                as: (UInt16, UInt16, UInt32, UInt8, UInt8, UInt16).self
            )
        else { throw RPCWireError.truncated("bind header", need: BindPDU.fixedLength, have: self.readableBytes) }
        guard count > 0 else { throw RPCWireError(.noPresentationContexts, "n_context_elem 0") }
        guard Int(count) <= limits.maximumPresentationContexts else {
            throw RPCWireError(
                .tooManyPresentationContexts,
                "n_context_elem \(count) > limit \(limits.maximumPresentationContexts)"
            )
        }
        var contexts: [PresentationContext] = []
        contexts.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            guard
                let (contextID, transferCount, _) = self.readMultipleIntegers(
                    endianness: endianness,
                    as: (UInt16, UInt8, UInt8).self
                ),
                let abstract = self.readSyntaxID(endianness: endianness)
            else {
                throw RPCWireError.truncated(
                    "context element \(index) of \(count)",
                    need: BindPDU.contextElementFixedLength,
                    have: self.readableBytes
                )
            }
            guard transferCount > 0 else {
                throw RPCWireError(.noTransferSyntaxes, "context \(contextID) offers no transfer syntax")
            }
            guard Int(transferCount) <= limits.maximumTransferSyntaxes else {
                throw RPCWireError(
                    .tooManyTransferSyntaxes,
                    "context \(contextID) offers \(transferCount) > limit \(limits.maximumTransferSyntaxes)"
                )
            }
            let needed = Int(transferCount) * SyntaxID.wireSize
            guard self.readableBytes >= needed else {
                throw RPCWireError.truncated(
                    "transfer syntaxes of context \(contextID)",
                    need: needed,
                    have: self.readableBytes
                )
            }
            var transfers: [SyntaxID] = []
            transfers.reserveCapacity(Int(transferCount))
            for _ in 0..<Int(transferCount) {
                guard let syntax = self.readSyntaxID(endianness: endianness) else {
                    throw RPCWireError.truncated("transfer syntax", need: SyntaxID.wireSize, have: self.readableBytes)
                }
                transfers.append(syntax)
            }
            contexts.append(
                PresentationContext(contextID: contextID, abstractSyntax: abstract, transferSyntaxes: transfers)
            )
        }
        return BindPDU(
            maxTransmitFragment: maxTransmit,
            maxReceiveFragment: maxReceive,
            associationGroupID: group,
            contexts: contexts,
            trailingBytes: self.readSlice(length: self.readableBytes) ?? ByteBuffer()
        )
    }

    mutating func writeBindPDUBody(_ bind: BindPDU, endianness: Endianness) {
        self.writeMultipleIntegers(
            bind.maxTransmitFragment,
            bind.maxReceiveFragment,
            bind.associationGroupID,
            UInt8(truncatingIfNeeded: bind.contexts.count),
            UInt8(0),
            UInt16(0),
            endianness: endianness
        )
        for context in bind.contexts {
            self.writeMultipleIntegers(
                context.contextID,
                UInt8(truncatingIfNeeded: context.transferSyntaxes.count),
                UInt8(0),
                endianness: endianness
            )
            self.writeSyntaxID(context.abstractSyntax, endianness: endianness)
            for syntax in context.transferSyntaxes {
                self.writeSyntaxID(syntax, endianness: endianness)
            }
        }
        var trailing = bind.trailingBytes
        self.writeBuffer(&trailing)
    }
}
