import NIOCore
import RPCWire

/// Synthetic PDUs shaped like what Windows, Samba and impacket send.
enum TestPDUs {
    static let samr = SyntaxID(uuid: DCEUUID("12345778-1234-abcd-ef00-0123456789ac")!, majorVersion: 1, minorVersion: 0)
    static let lsarpc = SyntaxID(
        uuid: DCEUUID("12345778-1234-abcd-ef00-0123456789ab")!,
        majorVersion: 0,
        minorVersion: 0
    )
    static let featureNegotiation = SyntaxID(
        uuid: DCEUUID("6cb71c2c-9812-4540-0300-000000000000")!,
        majorVersion: 1,
        minorVersion: 0
    )

    /// A Windows-style bind: NDR32, NDR64 and bind-time feature negotiation for one interface.
    static func windowsBind(
        callID: UInt32 = 2,
        interface: SyntaxID = samr,
        drep: DataRepresentation = .littleEndian,
        auth: AuthVerifier? = nil
    ) -> PDU {
        PDU(
            header: PDUHeader(packetType: .bind, dataRepresentation: drep, callID: callID),
            body: .bind(
                BindPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 0,
                    contexts: [
                        PresentationContext(contextID: 0, abstractSyntax: interface, transferSyntaxes: [.ndr]),
                        PresentationContext(contextID: 1, abstractSyntax: interface, transferSyntaxes: [.ndr64]),
                        PresentationContext(
                            contextID: 2,
                            abstractSyntax: interface,
                            transferSyntaxes: [featureNegotiation]
                        ),
                    ]
                )
            ),
            authVerifier: auth
        )
    }

    static func request(
        callID: UInt32,
        contextID: UInt16 = 0,
        opnum: UInt16,
        stub: [UInt8],
        flags: PFCFlags = .singleFragment
    )
        -> PDU
    {
        PDU(
            header: PDUHeader(packetType: .request, flags: flags, callID: callID),
            body: .request(
                RequestPDU(
                    allocationHint: UInt32(stub.count),
                    contextID: contextID,
                    opnum: opnum,
                    stub: ByteBuffer(bytes: stub)
                )
            )
        )
    }

    static func ntlmVerifier(level: AuthLevel = .integrity, padding: Int = 0, valueLength: Int = 16) -> AuthVerifier {
        AuthVerifier(
            authType: .ntlm,
            authLevel: level,
            padding: ByteBuffer(repeating: 0xBB, count: padding),
            contextID: 0x79231,
            value: ByteBuffer(bytes: (0..<valueLength).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) })
        )
    }
}
