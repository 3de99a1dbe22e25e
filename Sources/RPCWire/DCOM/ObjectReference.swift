public import NIOCore

/// `STDOBJREF` (MS-DCOM 2.2.18.2): what names one interface on one object.
public struct StandardObjectReference: Hashable, Sendable {
    public var flags: UInt32
    public var publicReferences: UInt32
    /// The object exporter (MS-DCOM 2.2.18.2 `oxid`): which process, found through `ResolveOxid2`.
    public var oxid: UInt64
    public var oid: UInt64
    /// The interface pointer id: the object UUID of every call on this interface.
    public var ipid: DCEUUID

    public init(flags: UInt32, publicReferences: UInt32, oxid: UInt64, oid: UInt64, ipid: DCEUUID) {
        self.flags = flags
        self.publicReferences = publicReferences
        self.oxid = oxid
        self.oid = oid
        self.ipid = ipid
    }
}

/// A marshaled interface pointer, `OBJREF` (MS-DCOM 2.2.18), as far as the gateway needs it.
///
/// Every field of an OBJREF is little-endian whatever the enclosing stub's `drep` (MS-DCOM 2.2.18:
/// it is a byte array, not NDR).
public struct ObjectReference: Hashable, Sendable {
    /// `OBJREF_STANDARD` (1), `OBJREF_HANDLER` (2), `OBJREF_CUSTOM` (4), `OBJREF_EXTENDED` (8).
    public enum Kind: UInt32, Hashable, Sendable {
        case standard = 1
        case handler = 2
        case custom = 4
        case extended = 8
    }

    public var kind: Kind
    /// The interface this pointer is for.
    public var iid: DCEUUID
    /// The standard part (standard, handler and extended OBJREFs).
    public var standard: StandardObjectReference?
    /// The resolver address (`saResAddr`) of standard, handler and extended OBJREFs: the object
    /// exporter's bindings, so a client can reach it without asking `ResolveOxid2`.
    public var resolverAddress: DualStringArray?
    /// The class of a handler or custom OBJREF (`clsid`).
    public var classID: DCEUUID?
    /// A custom OBJREF's `pObjectData`: for activation, the properties blob.
    public var customData: ByteBuffer?

    public init(
        kind: Kind,
        iid: DCEUUID,
        standard: StandardObjectReference? = nil,
        resolverAddress: DualStringArray? = nil,
        classID: DCEUUID? = nil,
        customData: ByteBuffer? = nil
    ) {
        self.kind = kind
        self.iid = iid
        self.standard = standard
        self.resolverAddress = resolverAddress
        self.classID = classID
        self.customData = customData
    }

    /// `MEOW`, the OBJREF signature (MS-DCOM 2.2.18).
    public static let signature: UInt32 = 0x574F_454D
}

extension ByteBuffer {
    /// Parses `self`, the bytes of one OBJREF (`abData` of an `MInterfacePointer`, MS-DCOM 2.2.14).
    /// Trailing bytes after an extended OBJREF's resolver address (its data elements) are not read.
    public mutating func readObjectReference(limits: WireLimits = WireLimits()) throws -> ObjectReference {
        guard let signature = self.readInteger(endianness: .little, as: UInt32.self),
            let rawFlags = self.readInteger(endianness: .little, as: UInt32.self),
            let iid = self.readDCEUUID(endianness: .little)
        else {
            throw RPCWireError(.invalidDCOM, "OBJREF shorter than its 24-byte header")
        }
        guard signature == ObjectReference.signature else {
            throw RPCWireError(.invalidDCOM, "OBJREF signature 0x\(String(signature, radix: 16)) is not MEOW")
        }
        guard let kind = ObjectReference.Kind(rawValue: rawFlags) else {
            throw RPCWireError(.invalidDCOM, "OBJREF flags 0x\(String(rawFlags, radix: 16)) name no OBJREF kind")
        }
        switch kind {
        case .standard, .extended:
            let standard = try self.readStandardObjectReference()
            if kind == .extended {
                // MS-DCOM 2.2.18.7: Signature1 precedes the resolver address.
                guard self.readInteger(endianness: .little, as: UInt32.self) != nil else {
                    throw RPCWireError(.invalidDCOM, "OBJREF_EXTENDED ends before Signature1")
                }
            }
            let address = try self.readPackedDualStringArray(limits: limits)
            if kind == .standard { self.moveReaderIndex(to: self.writerIndex) }
            return ObjectReference(kind: kind, iid: iid, standard: standard, resolverAddress: address)
        case .handler:
            let standard = try self.readStandardObjectReference()
            guard let clsid = self.readDCEUUID(endianness: .little) else {
                throw RPCWireError(.invalidDCOM, "OBJREF_HANDLER ends before its clsid")
            }
            let address = try self.readPackedDualStringArray(limits: limits)
            return ObjectReference(kind: kind, iid: iid, standard: standard, resolverAddress: address, classID: clsid)
        case .custom:
            guard let clsid = self.readDCEUUID(endianness: .little),
                let extensionLength = self.readInteger(endianness: .little, as: UInt32.self),
                self.readInteger(endianness: .little, as: UInt32.self) != nil
            else {
                throw RPCWireError(.invalidDCOM, "OBJREF_CUSTOM shorter than its 24-byte header")
            }
            // MS-DCOM 2.2.18.6: cbExtension is reserved and zero; extensions are not read.
            guard extensionLength == 0 else {
                throw RPCWireError(.invalidDCOM, "OBJREF_CUSTOM cbExtension \(extensionLength) is not 0")
            }
            let data = self.readSlice(length: self.readableBytes) ?? ByteBuffer()
            return ObjectReference(kind: kind, iid: iid, classID: clsid, customData: data)
        }
    }

    private mutating func readStandardObjectReference() throws -> StandardObjectReference {
        guard let flags = self.readInteger(endianness: .little, as: UInt32.self),
            let references = self.readInteger(endianness: .little, as: UInt32.self),
            let oxid = self.readInteger(endianness: .little, as: UInt64.self),
            let oid = self.readInteger(endianness: .little, as: UInt64.self),
            let ipid = self.readDCEUUID(endianness: .little)
        else {
            throw RPCWireError(.invalidDCOM, "STDOBJREF shorter than 40 bytes")
        }
        return StandardObjectReference(flags: flags, publicReferences: references, oxid: oxid, oid: oid, ipid: ipid)
    }
}

extension NDRReader {
    /// The pointee of an `MInterfacePointer*` (MS-DCOM 2.2.14): a conformant structure, so the
    /// conformance comes first, then `ulCntData`, then that many bytes of OBJREF.
    mutating func readInterfacePointer(_ what: String) throws -> ObjectReference {
        let conformance = try self.readCount(
            "\(what) MInterfacePointer max_count",
            limit: self.limits.maximumInterfacePointerLength
        )
        let length = try self.readUInt32("\(what) ulCntData")
        guard UInt64(length) == UInt64(conformance) else {
            throw RPCWireError(.invalidDCOM, "\(what) ulCntData \(length) != max_count \(conformance)")
        }
        var bytes = ByteBuffer(bytes: try self.readBytes("\(what) abData", count: conformance))
        return try bytes.readObjectReference(limits: self.limits)
    }
}
