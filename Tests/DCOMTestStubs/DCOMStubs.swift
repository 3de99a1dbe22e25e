public import NIOCore
public import RPCWire

// Synthetic DCOM stubs (never capture bytes) for the codec tests (RPCWireTests) and the
// connection tests (RPCGatewayTests): one copy, in a target both test targets depend on.

/// Builds NDR stubs for the DCOM tests, aligning relative to the stub start.
public struct StubBuilder {
    public var buffer = ByteBuffer()
    public let ndr64: Bool
    public var nextReferent: UInt64 = 0x0002_0000

    public init(ndr64: Bool = false) { self.ndr64 = ndr64 }

    public mutating func align(_ n: Int) {
        while self.buffer.writerIndex % n != 0 { self.buffer.writeInteger(UInt8(0)) }
    }
    public mutating func u16(_ value: UInt16) {
        self.align(2)
        self.buffer.writeInteger(value, endianness: .little)
    }
    public mutating func u32(_ value: UInt32) {
        self.align(4)
        self.buffer.writeInteger(value, endianness: .little)
    }
    public mutating func u64(_ value: UInt64) {
        self.align(8)
        self.buffer.writeInteger(value, endianness: .little)
    }
    public mutating func wide(_ value: UInt64) {
        if self.ndr64 { self.u64(value) } else { self.u32(UInt32(value)) }
    }
    public mutating func referent(null: Bool = false) {
        guard !null else { return self.wide(0) }
        self.wide(self.nextReferent)
        self.nextReferent += 4
    }
    public mutating func uuid(_ uuid: DCEUUID) {
        self.align(4)
        self.buffer.writeDCEUUID(uuid, endianness: .little)
    }
    public mutating func bytes(_ bytes: [UInt8]) { self.buffer.writeBytes(bytes) }
    public mutating func bytes(_ bytes: ByteBuffer) { self.buffer.writeImmutableBuffer(bytes) }

    /// NDR `DUALSTRINGARRAY` pointee: conformance, counts, units.
    public mutating func dualStringArray(_ units: [UInt16], securityOffset: UInt16) {
        self.wide(UInt64(units.count))
        self.u16(UInt16(units.count))
        self.u16(securityOffset)
        for unit in units { self.u16(unit) }
    }

    public mutating func orpcThis(cid: DCEUUID) {
        self.u16(5)
        self.u16(7)
        self.u32(0)
        self.u32(0)
        self.uuid(cid)
        self.referent(null: true)
    }
}

/// The 16-bit units of a DUALSTRINGARRAY with TCP bindings and one security binding.
public func dualStringUnits(
    _ addresses: [String],
    principal: String = "host/dc1"
) -> (units: [UInt16], securityOffset: UInt16) {
    var units: [UInt16] = []
    for address in addresses {
        units.append(StringBinding.tcpTowerID)
        units.append(contentsOf: address.utf16)
        units.append(0)
    }
    units.append(0)
    let securityOffset = UInt16(units.count)
    units.append(contentsOf: [0x0a, 0xffff])
    units.append(contentsOf: principal.utf16)
    units.append(0)
    units.append(0)
    return (units, securityOffset)
}

/// A type-serialized (MS-RPCE 2.2.6) little-endian object around `body`, padded to 8.
public func typeSerialized(_ body: ByteBuffer, padded: Bool = true) -> ByteBuffer {
    var object = body
    while padded, object.readableBytes % 8 != 0 { object.writeInteger(UInt8(0)) }
    var out = ByteBuffer()
    out.writeBytes([1, 0x10, 8, 0])
    out.writeInteger(UInt32(0xcccc_cccc), endianness: .little)
    out.writeInteger(UInt32(object.readableBytes), endianness: .little)
    out.writeInteger(UInt32(0), endianness: .little)
    out.writeImmutableBuffer(object)
    return out
}

/// An activation properties blob with the given (CLSID, serialized property) pairs.
public func activationBlob(_ properties: [(DCEUUID, ByteBuffer)]) -> ByteBuffer {
    let count = UInt32(properties.count)
    func header(totalSize: UInt32, headerSize: UInt32) -> ByteBuffer {
        var h = StubBuilder()
        h.u32(totalSize)
        h.u32(headerSize)
        h.u32(0)
        h.u32(2)
        h.u32(count)
        h.uuid(.zero)
        h.referent()
        h.referent()
        h.referent(null: true)
        h.u32(count)
        for (clsid, _) in properties { h.uuid(clsid) }
        h.u32(count)
        for (_, bytes) in properties { h.u32(UInt32(bytes.readableBytes)) }
        return typeSerialized(h.buffer)
    }
    let headerSize = UInt32(header(totalSize: 0, headerSize: 0).readableBytes)
    let total = headerSize + properties.reduce(0) { $0 + UInt32($1.1.readableBytes) }
    var blob = ByteBuffer()
    blob.writeInteger(total, endianness: .little)
    blob.writeInteger(UInt32(0), endianness: .little)
    blob.writeImmutableBuffer(header(totalSize: total, headerSize: headerSize))
    for (_, bytes) in properties { blob.writeImmutableBuffer(bytes) }
    return blob
}

/// A custom OBJREF wrapping `data`.
public func customObjectReference(iid: DCEUUID, clsid: DCEUUID, data: ByteBuffer) -> ByteBuffer {
    var out = ByteBuffer()
    out.writeInteger(ObjectReference.signature, endianness: .little)
    out.writeInteger(UInt32(4), endianness: .little)
    out.writeDCEUUID(iid, endianness: .little)
    out.writeDCEUUID(clsid, endianness: .little)
    out.writeInteger(UInt32(0), endianness: .little)
    out.writeInteger(UInt32(data.readableBytes + 8), endianness: .little)
    out.writeImmutableBuffer(data)
    return out
}

/// A standard OBJREF with a packed resolver address.
public func standardObjectReference(iid: DCEUUID, oxid: UInt64, ipid: DCEUUID, addresses: [String]) -> ByteBuffer {
    var out = ByteBuffer()
    out.writeInteger(ObjectReference.signature, endianness: .little)
    out.writeInteger(UInt32(1), endianness: .little)
    out.writeDCEUUID(iid, endianness: .little)
    out.writeInteger(UInt32(0), endianness: .little)
    out.writeInteger(UInt32(5), endianness: .little)
    out.writeInteger(oxid, endianness: .little)
    out.writeInteger(UInt64(0x1234), endianness: .little)
    out.writeDCEUUID(ipid, endianness: .little)
    let (units, offset) = dualStringUnits(addresses)
    out.writeInteger(UInt16(units.count), endianness: .little)
    out.writeInteger(offset, endianness: .little)
    for unit in units { out.writeInteger(unit, endianness: .little) }
    return out
}

extension StubBuilder {
    public mutating func interfacePointer(_ objref: ByteBuffer) {
        self.wide(UInt64(objref.readableBytes))
        self.u32(UInt32(objref.readableBytes))
        self.bytes(objref)
    }
}

public enum DCOMSamples {
    public static let mmc20 = DCEUUID("49b2791a-b1ae-4c90-9b8e-e860ba07f889")!
    public static let iDispatch = DCEUUID("00020400-0000-0000-c000-000000000046")!
    public static let cid = DCEUUID("fd7ed21b-dac9-49d2-aadd-65b0c706fc49")!
    public static let ipid = DCEUUID("00014006-0530-0000-0333-997691ea98ab")!
    public static let remUnknown = DCEUUID("0000c000-0530-0000-7d85-2faeeac5c880")!
    public static let oxid: UInt64 = 0x0537_7350_7f21_3667

    public static func instantiationInfo(clsid: DCEUUID, iids: [DCEUUID]) -> ByteBuffer {
        var b = StubBuilder()
        b.uuid(clsid)
        b.u32(0x14)
        b.u32(0)
        b.u32(0)
        b.u32(UInt32(iids.count))
        b.u32(0)
        b.referent()
        b.u32(0)
        b.u16(5)
        b.u16(7)
        b.u32(UInt32(iids.count))
        for iid in iids { b.uuid(iid) }
        return typeSerialized(b.buffer)
    }

    /// A RemoteCreateInstance (or, without pUnkOuter, RemoteGetClassObject) request stub.
    public static func activationRequest(
        createInstance: Bool,
        ndr64: Bool = false,
        clsid: DCEUUID = mmc20
    ) -> ByteBuffer {
        let other = DCEUUID("000001b9-0000-0000-c000-000000000046")!
        var filler = ByteBuffer()
        filler.writeBytes([UInt8](repeating: 0, count: 24))
        let blob = activationBlob([
            (other, typeSerialized(filler)),
            (DCOMClassID.instantiationInfo, instantiationInfo(clsid: clsid, iids: [iDispatch])),
        ])
        let objref = customObjectReference(
            iid: DCEUUID("000001a2-0000-0000-c000-000000000046")!,
            clsid: DCOMClassID.activationPropertiesIn,
            data: blob
        )
        var b = StubBuilder(ndr64: ndr64)
        b.orpcThis(cid: cid)
        if createInstance { b.referent(null: true) }
        b.referent()
        b.interfacePointer(objref)
        return b.buffer
    }

    public static func activationReply(ndr64: Bool = false, port: Int = 49670) -> ByteBuffer {
        var scm = StubBuilder()
        scm.referent(null: true)
        scm.referent()
        scm.u64(oxid)
        scm.referent()
        scm.uuid(remUnknown)
        scm.u32(4)
        scm.u16(5)
        scm.u16(7)
        let (units, offset) = dualStringUnits(["dc1[\(port)]", "10.0.0.5[\(port)]"])
        scm.dualStringArray(units, securityOffset: offset)

        var props = StubBuilder()
        props.u32(1)
        props.referent()
        props.referent()
        props.referent()
        props.u32(1)
        props.uuid(iDispatch)
        props.u32(1)
        props.u32(0)
        props.u32(1)
        props.referent()
        props.interfacePointer(
            standardObjectReference(iid: iDispatch, oxid: oxid, ipid: ipid, addresses: ["dc1", "10.0.0.5"])
        )

        let blob = activationBlob([
            (DCOMClassID.propsOutInfo, typeSerialized(props.buffer)),
            (DCOMClassID.scmReplyInfo, typeSerialized(scm.buffer)),
        ])
        let objref = customObjectReference(
            iid: DCEUUID("000001a3-0000-0000-c000-000000000046")!,
            clsid: DCOMClassID.activationPropertiesOut,
            data: blob
        )
        var b = StubBuilder(ndr64: ndr64)
        b.u32(1)
        b.referent(null: true)
        b.referent()
        b.interfacePointer(objref)
        b.u32(0)
        return b.buffer
    }

    public static func resolveOxid2Reply(ndr64: Bool = false) -> ByteBuffer {
        var b = StubBuilder(ndr64: ndr64)
        b.referent()
        let (units, offset) = dualStringUnits(["ws6[65082]", "172.18.39.6[65082]"])
        b.dualStringArray(units, securityOffset: offset)
        b.uuid(remUnknown)
        b.u32(4)
        b.u16(5)
        b.u16(7)
        b.u32(0)
        return b.buffer
    }

    public static func serverAlive2Reply(ndr64: Bool = false) -> ByteBuffer {
        var b = StubBuilder(ndr64: ndr64)
        b.u16(5)
        b.u16(7)
        b.referent()
        let (units, offset) = dualStringUnits(["WORKSTATION6", "172.18.39.6"])
        b.dualStringArray(units, securityOffset: offset)
        b.referent(null: true)
        b.u32(0)
        return b.buffer
    }
}
