/// Bounds applied to every length read from the wire before it is used.
///
/// The defaults suit Windows and Samba peers: both negotiate fragments of at most 5840 bytes on
/// TCP, and a bind from Windows carries three presentation contexts.
public struct WireLimits: Hashable, Sendable {
    /// Largest accepted `frag_length`. `frag_length` is 16 bits, so 65535 disables the check.
    public var maximumFragmentLength: Int
    /// Most presentation context elements accepted in one bind or alter_context.
    public var maximumPresentationContexts: Int
    /// Most transfer syntaxes accepted in one presentation context element.
    public var maximumTransferSyntaxes: Int
    /// Largest reassembled stub (all fragments of one call) the endpoint-mapper rewriter buffers.
    public var maximumReassembledStubLength: Int
    /// Most towers (or lookup entries) accepted in one endpoint-mapper reply.
    public var maximumTowers: Int
    /// Most floors accepted in one protocol tower.
    public var maximumFloors: Int
    /// Largest accepted tower octet string (`tower_length`). A standard ncacn_ip_tcp tower is 75 bytes,
    /// an ncacn_np one about 100 (C706 Appendix L).
    public var maximumTowerLength: Int
    /// Largest accepted endpoint-mapper annotation, NUL included. C706 Appendix O declares
    /// `ept_max_annotation_size` 64; the default allows more so an odd server is not refused.
    public var maximumAnnotationLength: Int
    /// Most fragments accepted for one call when reassembling, however small each one is.
    public var maximumFragmentsPerCall: Int
    /// Largest accepted name in an authentication token, in bytes as sent: an NTLM user, domain
    /// or workstation name (UTF-16, so the default 512 bytes are 256 characters; Windows user
    /// names have at most 20, NetBIOS names 15, DNS names 255), a Kerberos realm or one component of a
    /// service principal name.
    public var maximumIdentityNameLength: Int
    /// Most components accepted in a Kerberos principal name (`ldap/dc1.example.com` has 2).
    public var maximumPrincipalComponents: Int
    /// Largest accepted DCOM `MInterfacePointer` (`ulCntData`, MS-DCOM 2.2.14): the marshaled
    /// OBJREF, or the activation properties blob it wraps. Windows activations carry about 1 KiB.
    public var maximumInterfacePointerLength: Int
    /// Most 16-bit entries accepted in a DCOM `DUALSTRINGARRAY` (`wNumEntries`, MS-DCOM 2.2.19.1).
    /// A Windows server's OXID bindings with named pipes and six security bindings use about 300.
    public var maximumDualStringArrayEntries: Int
    /// Most properties in one activation properties blob (`cIfs` of the CustomHeader, MS-DCOM
    /// 2.2.22.1, whose IDL range is `MAX_ACTPROP_LIMIT` = 10), and most interfaces requested or
    /// returned by one activation (MS-DCOM declares `MAX_REQUESTED_INTERFACES` 0x8000; Windows asks
    /// for one or two).
    public var maximumActivationEntries: Int
    /// Most ORPC extents accepted in one ORPCTHIS/ORPCTHAT (MS-DCOM 2.2.13.2; Windows sends at most two).
    public var maximumORPCExtents: Int
    /// Largest accepted ORPC extent body, in bytes (MS-DCOM 2.2.13.1).
    public var maximumORPCExtentLength: Int

    public init(
        maximumFragmentLength: Int = 16 * 1024,
        maximumPresentationContexts: Int = 32,
        maximumTransferSyntaxes: Int = 8,
        maximumReassembledStubLength: Int = 1024 * 1024,
        maximumTowers: Int = 4096,
        maximumFloors: Int = 16,
        maximumTowerLength: Int = 1024,
        maximumAnnotationLength: Int = 256,
        maximumFragmentsPerCall: Int = 1024,
        maximumIdentityNameLength: Int = 512,
        maximumPrincipalComponents: Int = 8,
        maximumInterfacePointerLength: Int = 64 * 1024,
        maximumDualStringArrayEntries: Int = 8 * 1024,
        maximumActivationEntries: Int = 64,
        maximumORPCExtents: Int = 16,
        maximumORPCExtentLength: Int = 16 * 1024
    ) {
        self.maximumFragmentLength = maximumFragmentLength
        self.maximumPresentationContexts = maximumPresentationContexts
        self.maximumTransferSyntaxes = maximumTransferSyntaxes
        self.maximumReassembledStubLength = maximumReassembledStubLength
        self.maximumTowers = maximumTowers
        self.maximumFloors = maximumFloors
        self.maximumTowerLength = maximumTowerLength
        self.maximumAnnotationLength = maximumAnnotationLength
        self.maximumFragmentsPerCall = maximumFragmentsPerCall
        self.maximumIdentityNameLength = maximumIdentityNameLength
        self.maximumPrincipalComponents = maximumPrincipalComponents
        self.maximumInterfacePointerLength = maximumInterfacePointerLength
        self.maximumDualStringArrayEntries = maximumDualStringArrayEntries
        self.maximumActivationEntries = maximumActivationEntries
        self.maximumORPCExtents = maximumORPCExtents
        self.maximumORPCExtentLength = maximumORPCExtentLength
    }

    /// The 16-byte common header of every connection-oriented PDU (C706 12.6.3.1).
    public static let commonHeaderLength = 16
    /// The `sec_trailer` that precedes `auth_value` (C706 13.2.6.1, MS-RPCE 2.2.2.11).
    public static let securityTrailerLength = 8
    /// Fragment sizes below this are refused by Samba clients (C706 12.6.3.1 "must receive").
    public static let minimumNegotiatedFragmentSize = 1432
}
