/// Builders for the answers the gateway sends itself when policy refuses something.
///
/// Each is one call; the result echoes the call id and data representation of what it answers so
/// the client matches it to its outstanding call (C706 12.6.3.1 `call_id`).
extension PDU {
    /// A `bind_nak` (C706 12.6.4.5) advertising protocol version 5.0.
    public static func bindNak(
        callID: UInt32,
        reason: BindNakReason,
        dataRepresentation: DataRepresentation = .littleEndian
    ) -> PDU {
        PDU(
            header: PDUHeader(packetType: .bindNak, dataRepresentation: dataRepresentation, callID: callID),
            body: .bindNak(
                BindNakPDU(rejectReason: reason, supportedVersions: [RPCProtocolVersion(major: 5, minor: 0)])
            )
        )
    }

    /// A `bind_ack` (for a bind) or `alter_context_resp` (for an alter_context) that answers every
    /// context element of `request` with `results`, positionally.
    ///
    /// Returns `nil` when `request` is not a bind or alter_context. The fragment sizes echo the
    /// client's offer, which the client accepts by construction (C706 12.6.4.4).
    public static func bindResponse(
        answering request: PDU,
        results: [PresentationResult],
        secondaryAddress: [UInt8] = []
    ) -> PDU? {
        let bind: BindPDU
        let isAlter: Bool
        switch request.body {
        case .bind(let body):
            bind = body
            isAlter = false
        case .alterContext(let body):
            bind = body
            isAlter = true
        default:
            return nil
        }
        let ack = BindAckPDU(
            maxTransmitFragment: bind.maxTransmitFragment,
            maxReceiveFragment: bind.maxReceiveFragment,
            associationGroupID: bind.associationGroupID,
            secondaryAddress: secondaryAddress,
            results: results
        )
        var flags: PFCFlags = .singleFragment
        if request.header.flags.contains(.pendingCancelOrSupportHeaderSign) {
            flags.insert(.pendingCancelOrSupportHeaderSign)
        }
        let header = PDUHeader(
            versionMinor: request.header.versionMinor,
            packetType: isAlter ? .alterContextResponse : .bindAck,
            flags: flags,
            dataRepresentation: request.header.dataRepresentation,
            callID: request.header.callID
        )
        return PDU(header: header, body: isAlter ? .alterContextResponse(ack) : .bindAck(ack))
    }

    /// A bind_ack/alter_context_resp refusing every context of `request`: provider rejection,
    /// "abstract syntax not supported" for interface contexts and "proposed transfer syntaxes not
    /// supported" for bind-time feature negotiation elements. impacket reports this as the
    /// interface not listening; rpcclient as a failed bind.
    public static func bindRejection(answering request: PDU, secondaryAddress: [UInt8] = []) -> PDU? {
        let contexts: [PresentationContext]
        switch request.body {
        case .bind(let body), .alterContext(let body): contexts = body.contexts
        default: return nil
        }
        let results = contexts.map { context in
            PresentationResult(
                result: .providerRejection,
                reason: context.isBindTimeFeatureNegotiation
                    ? .proposedTransferSyntaxesNotSupported : .abstractSyntaxNotSupported,
                transferSyntax: PresentationResult.nullSyntax
            )
        }
        return Self.bindResponse(answering: request, results: results, secondaryAddress: secondaryAddress)
    }

    /// A `fault` (C706 12.6.4.7) for `callID` with `PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE`:
    /// the call was not executed, so the client may safely retry it elsewhere.
    public static func fault(
        callID: UInt32,
        contextID: UInt16,
        status: RPCStatus,
        dataRepresentation: DataRepresentation = .littleEndian
    ) -> PDU {
        PDU(
            header: PDUHeader(
                packetType: .fault,
                flags: [.firstFragment, .lastFragment, .didNotExecute],
                dataRepresentation: dataRepresentation,
                callID: callID
            ),
            body: .fault(FaultPDU(contextID: contextID, status: status))
        )
    }
}
