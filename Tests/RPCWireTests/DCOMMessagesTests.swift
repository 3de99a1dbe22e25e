import NIOCore
import RPCWire
import Testing

/// Builds NDR stubs for the DCOM tests, aligning relative to the stub start.
struct StubBuilder {
    var buffer = ByteBuffer()
    let ndr64: Bool
    var nextReferent: UInt64 = 0x0002_0000

    init(ndr64: Bool = false) { self.ndr64 = ndr64 }

    mutating func align(_ n: Int) {
        while self.buffer.writerIndex % n != 0 { self.buffer.writeInteger(UInt8(0)) }
    }
    mutating func u16(_ value: UInt16) {
        self.align(2)
        self.buffer.writeInteger(value, endianness: .little)
    }
    mutating func u32(_ value: UInt32) {
        self.align(4)
        self.buffer.writeInteger(value, endianness: .little)
    }
    mutating func u64(_ value: UInt64) {
        self.align(8)
        self.buffer.writeInteger(value, endianness: .little)
    }
    mutating func wide(_ value: UInt64) {
        if self.ndr64 { self.u64(value) } else { self.u32(UInt32(value)) }
    }
    mutating func referent(null: Bool = false) {
        guard !null else { return self.wide(0) }
        self.wide(self.nextReferent)
        self.nextReferent += 4
    }
    mutating func uuid(_ uuid: DCEUUID) {
        self.align(4)
        self.buffer.writeDCEUUID(uuid, endianness: .little)
    }
    mutating func bytes(_ bytes: [UInt8]) { self.buffer.writeBytes(bytes) }
    mutating func bytes(_ bytes: ByteBuffer) { self.buffer.writeImmutableBuffer(bytes) }

    /// NDR `DUALSTRINGARRAY` pointee: conformance, counts, units.
    mutating func dualStringArray(_ units: [UInt16], securityOffset: UInt16) {
        self.wide(UInt64(units.count))
        self.u16(UInt16(units.count))
        self.u16(securityOffset)
        for unit in units { self.u16(unit) }
    }

    mutating func orpcThis(cid: DCEUUID) {
        self.u16(5)
        self.u16(7)
        self.u32(0)
        self.u32(0)
        self.uuid(cid)
        self.referent(null: true)
    }
}

/// The 16-bit units of a DUALSTRINGARRAY with TCP bindings and one security binding.
func dualStringUnits(_ addresses: [String], principal: String = "host/dc1") -> (units: [UInt16], securityOffset: UInt16)
{
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
func typeSerialized(_ body: ByteBuffer, padded: Bool = true) -> ByteBuffer {
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
func activationBlob(_ properties: [(DCEUUID, ByteBuffer)]) -> ByteBuffer {
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
func customObjectReference(iid: DCEUUID, clsid: DCEUUID, data: ByteBuffer) -> ByteBuffer {
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
func standardObjectReference(iid: DCEUUID, oxid: UInt64, ipid: DCEUUID, addresses: [String]) -> ByteBuffer {
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
    mutating func interfacePointer(_ objref: ByteBuffer) {
        self.wide(UInt64(objref.readableBytes))
        self.u32(UInt32(objref.readableBytes))
        self.bytes(objref)
    }
}

enum DCOMSamples {
    static let mmc20 = DCEUUID("49b2791a-b1ae-4c90-9b8e-e860ba07f889")!
    static let iDispatch = DCEUUID("00020400-0000-0000-c000-000000000046")!
    static let cid = DCEUUID("fd7ed21b-dac9-49d2-aadd-65b0c706fc49")!
    static let ipid = DCEUUID("00014006-0530-0000-0333-997691ea98ab")!
    static let remUnknown = DCEUUID("0000c000-0530-0000-7d85-2faeeac5c880")!
    static let oxid: UInt64 = 0x0537_7350_7f21_3667

    static func instantiationInfo(clsid: DCEUUID, iids: [DCEUUID]) -> ByteBuffer {
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
    static func activationRequest(createInstance: Bool, ndr64: Bool = false, clsid: DCEUUID = mmc20) -> ByteBuffer {
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

    static func activationReply(ndr64: Bool = false, port: Int = 49670) -> ByteBuffer {
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

    static func resolveOxid2Reply(ndr64: Bool = false) -> ByteBuffer {
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

    static func serverAlive2Reply(ndr64: Bool = false) -> ByteBuffer {
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

@Suite("DCOM messages")
struct DCOMMessagesTests {
    @Test(arguments: [false, true])
    func activationRequest(ndr64: Bool) throws {
        for createInstance in [true, false] {
            var stub = DCOMSamples.activationRequest(createInstance: createInstance, ndr64: ndr64)
            let request = try stub.readActivationRequest(
                createInstance ? .remoteCreateInstance : .remoteGetClassObject,
                syntax: ndr64 ? .ndr64 : .ndr32
            )
            #expect(request.classID == DCOMSamples.mmc20)
            #expect(request.requestedInterfaces == [DCOMSamples.iDispatch])
            #expect(request.orpcThis.causalityID == DCOMSamples.cid)
            #expect(request.orpcThis.version == COMVersion(major: 5, minor: 7))
            #expect(stub.readableBytes == 0)
        }
    }

    @Test(arguments: [false, true])
    func activationReply(ndr64: Bool) throws {
        var stub = DCOMSamples.activationReply(ndr64: ndr64)
        let reply = try stub.readActivationReply(.remoteCreateInstance, syntax: ndr64 ? .ndr64 : .ndr32)
        #expect(reply.result == 0)
        #expect(reply.exporter?.oxid == DCOMSamples.oxid)
        #expect(reply.exporter?.remUnknownIPID == DCOMSamples.remUnknown)
        #expect(reply.exporter?.bindings.stringBindings.map(\.networkAddress) == ["dc1[49670]", "10.0.0.5[49670]"])
        #expect(reply.exporter?.bindings.securityBindings.first?.principalName == "host/dc1")
        #expect(reply.interfaces.count == 1)
        #expect(reply.interfaces.first?.reference?.standard?.ipid == DCOMSamples.ipid)
        #expect(reply.interfaces.first?.reference?.standard?.oxid == DCOMSamples.oxid)
        #expect(reply.announcedPorts == [49670])
    }

    @Test(arguments: [false, true])
    func objectExporterReplies(ndr64: Bool) throws {
        let syntax: NDRSyntax = ndr64 ? .ndr64 : .ndr32
        var resolve = DCOMSamples.resolveOxid2Reply(ndr64: ndr64)
        let resolved = try resolve.readResolveOxidReply(withVersion: true, syntax: syntax)
        #expect(resolved.bindings.tcpPorts == [65082])
        #expect(resolved.remUnknownIPID == DCOMSamples.remUnknown)
        #expect(resolved.serverVersion == COMVersion(major: 5, minor: 7))
        #expect(resolved.status == RPCStatus(rawValue: 0))

        var alive = DCOMSamples.serverAlive2Reply(ndr64: ndr64)
        let reply = try alive.readServerAlive2Reply(syntax: syntax)
        #expect(reply.bindings.stringBindings.map(\.networkAddress) == ["WORKSTATION6", "172.18.39.6"])
        #expect(reply.bindings.tcpPorts.isEmpty)
        #expect(reply.version == COMVersion(major: 5, minor: 7))
    }

    @Test func resolveOxidRequest() throws {
        var b = StubBuilder()
        b.u64(DCOMSamples.oxid)
        b.u16(2)
        b.u32(2)
        b.u16(7)
        b.u16(15)
        let request = try b.buffer.readResolveOxidRequest(syntax: .ndr32)
        #expect(request.oxid == DCOMSamples.oxid)
        #expect(request.requestedProtocolSequences == [7, 15])
    }

    @Test func stringBindingPorts() {
        func port(_ address: String, tower: UInt16 = StringBinding.tcpTowerID) -> UInt16? {
            StringBinding(towerID: tower, networkAddress: address).port
        }
        #expect(port("172.16.66.36[49670]") == 49670)
        #expect(StringBinding(towerID: 7, networkAddress: "dc1[135]").host == "dc1")
        #expect(port("dc1") == nil)
        #expect(port("dc1[]") == nil)
        #expect(port("dc1[0]") == nil)
        #expect(port("dc1[65536]") == nil)
        #expect(port("dc1[12a]") == nil)
        #expect(port("dc1[135") == nil)
        #expect(port("\\\\DC1[\\PIPE\\atsvc]", tower: 0x0f) == nil)
        #expect(port("dc1[135]", tower: 0x0f) == nil)
    }

    @Test func orpcThisPrefixOfAnObjectCall() throws {
        var b = StubBuilder()
        b.orpcThis(cid: DCOMSamples.cid)
        b.u32(0xdead_beef)  // the method's own parameters follow
        var stub = b.buffer
        let this = try stub.readORPCThis(syntax: .ndr32)
        #expect(this.causalityID == DCOMSamples.cid)
        #expect(stub.readInteger(endianness: .little, as: UInt32.self) == 0xdead_beef)
    }

    @Test func orpcThisWithExtensions() throws {
        var b = StubBuilder()
        b.u16(5)
        b.u16(7)
        b.u32(0)
        b.u32(0)
        b.uuid(DCOMSamples.cid)
        b.referent()  // extensions
        b.u32(1)  // size
        b.u32(0)
        b.referent()  // extent array
        b.u32(2)  // (size + 1) & ~1 slots
        b.referent()
        b.referent(null: true)
        b.u32(8)  // ORPC_EXTENT conformance
        b.uuid(DCEUUID("0000031c-0000-0000-c000-000000000046")!)
        b.u32(5)
        b.bytes([1, 2, 3, 4, 5, 0, 0, 0])
        var stub = b.buffer
        let this = try stub.readORPCThis(syntax: .ndr32)
        #expect(this.extensions.map(\.size) == [5])
        #expect(stub.readableBytes == 0)
    }

    // MARK: - Malformed

    /// Every truncation of every sample throws (never traps, never reads past the end).
    @Test func everyTruncationThrows() {
        let samples: [(String, ByteBuffer, (inout ByteBuffer) throws -> Void)] = [
            (
                "request", DCOMSamples.activationRequest(createInstance: true),
                { _ = try $0.readActivationRequest(.remoteCreateInstance, syntax: .ndr32) }
            ),
            (
                "reply", DCOMSamples.activationReply(),
                { _ = try $0.readActivationReply(.remoteCreateInstance, syntax: .ndr32) }
            ),
            (
                "resolve", DCOMSamples.resolveOxid2Reply(),
                { _ = try $0.readResolveOxidReply(withVersion: true, syntax: .ndr32) }
            ),
            ("alive", DCOMSamples.serverAlive2Reply(ndr64: true), { _ = try $0.readServerAlive2Reply(syntax: .ndr64) }),
        ]
        for (name, sample, parse) in samples {
            for length in 0..<sample.readableBytes {
                var truncated = sample.getSlice(at: sample.readerIndex, length: length)!
                #expect(throws: RPCWireError.self, "\(name) cut at \(length)") { try parse(&truncated) }
            }
            var extended = sample
            extended.writeInteger(UInt32(0))
            #expect(throws: RPCWireError.self, "\(name) with trailing bytes") { try parse(&extended) }
        }
    }

    /// Every single-byte corruption either parses or throws ``RPCWireError``; never traps.
    @Test func corruptionsNeverTrap() {
        let sample = DCOMSamples.activationReply()
        var thrown = 0
        for index in 0..<sample.readableBytes {
            for value in [UInt8(0x00), 0xff, 0x7f] {
                var corrupted = sample
                corrupted.setInteger(value, at: index)
                do {
                    _ = try corrupted.readActivationReply(.remoteCreateInstance, syntax: .ndr32)
                } catch is RPCWireError {
                    thrown += 1
                } catch {
                    Issue.record("byte \(index) = \(value): \(error)")
                }
            }
        }
        #expect(thrown > 0)
    }

    @Test func limitsAreEnforced() {
        var stub = DCOMSamples.activationReply()
        #expect(throws: RPCWireError.self) {
            _ = try stub.readActivationReply(
                .remoteCreateInstance,
                syntax: .ndr32,
                limits: WireLimits(maximumInterfacePointerLength: 64)
            )
        }
        var resolve = DCOMSamples.resolveOxid2Reply()
        #expect(throws: RPCWireError.self) {
            _ = try resolve.readResolveOxidReply(
                withVersion: true,
                syntax: .ndr32,
                limits: WireLimits(maximumDualStringArrayEntries: 8)
            )
        }
    }

    @Test func dualStringArrayInconsistencies() {
        func parse(_ units: [UInt16], securityOffset: UInt16, count: UInt16? = nil) throws -> DualStringArray {
            var stub = StubBuilder()
            stub.u16(5)
            stub.u16(7)
            stub.referent()
            stub.dualStringArray(units, securityOffset: securityOffset)
            stub.referent(null: true)
            stub.u32(0)
            if let count {
                // Rewrite wNumEntries to disagree with max_count.
                stub.buffer.setInteger(count, at: 12, endianness: .little)
            }
            return try stub.buffer.readServerAlive2Reply(syntax: .ndr32).bindings
        }
        let (units, offset) = dualStringUnits(["a[1]"])
        #expect((try? parse(units, securityOffset: offset))?.tcpPorts == [1])
        // Security offset beyond the array.
        #expect(throws: RPCWireError.self) { try parse(units, securityOffset: UInt16(units.count + 1)) }
        // A string binding that runs into the security section without its NUL.
        #expect(throws: RPCWireError.self) { try parse([7, 0x61, 0x62, 0x0a, 0xffff, 0, 0], securityOffset: 3) }
        // A security binding without its NUL.
        #expect(throws: RPCWireError.self) { try parse([0, 0x0a, 0xffff, 0x61], securityOffset: 1) }
        // wNumEntries disagreeing with the conformance.
        #expect(throws: RPCWireError.self) { try parse(units, securityOffset: offset, count: 3) }
        // Empty: no bindings at all.
        #expect((try? parse([], securityOffset: 0))?.stringBindings == [])
    }

    @Test func objectReferenceErrors() {
        var wrongSignature = standardObjectReference(iid: .zero, oxid: 1, ipid: .zero, addresses: ["a"])
        wrongSignature.setInteger(UInt32(0x1234_5678), at: 0, endianness: .little)
        #expect(throws: RPCWireError.self) { _ = try wrongSignature.readObjectReference() }
        var wrongKind = standardObjectReference(iid: .zero, oxid: 1, ipid: .zero, addresses: ["a"])
        wrongKind.setInteger(UInt32(3), at: 4, endianness: .little)
        #expect(throws: RPCWireError.self) { _ = try wrongKind.readObjectReference() }
        var good = standardObjectReference(iid: .zero, oxid: 9, ipid: DCOMSamples.ipid, addresses: ["a[7]"])
        #expect((try? good.readObjectReference())?.standard?.oxid == 9)
    }

    /// A request whose properties lack InstantiationInfo, or whose pActProperties is not the
    /// ActivationPropertiesIn custom OBJREF, is malformed.
    @Test func activationRequestWithoutInstantiationInfo() {
        let blob = activationBlob([
            (DCEUUID("000001b9-0000-0000-c000-000000000046")!, typeSerialized(ByteBuffer(bytes: [0, 0, 0, 0])))
        ])
        for clsid in [DCOMClassID.activationPropertiesIn, DCOMClassID.activationPropertiesOut] {
            var b = StubBuilder()
            b.orpcThis(cid: DCOMSamples.cid)
            b.referent()
            b.interfacePointer(customObjectReference(iid: .zero, clsid: clsid, data: blob))
            var stub = b.buffer
            #expect(throws: RPCWireError.self) {
                _ = try stub.readActivationRequest(.remoteGetClassObject, syntax: .ndr32)
            }
        }
    }

    /// impacket writes the unpadded object buffer length (MS-RPCE 2.2.6.2 asks for a multiple of
    /// 8) and Windows accepts it: so does the parser.
    @Test func unpaddedTypeSerializationAsImpacketWritesIt() throws {
        var info = StubBuilder()
        info.uuid(DCOMSamples.mmc20)
        for value: UInt32 in [0x14, 0, 0, 1, 0] { info.u32(value) }
        info.referent()
        info.u32(0)
        info.u16(5)
        info.u16(7)
        info.u32(1)
        info.uuid(DCOMSamples.iDispatch)
        #expect(info.buffer.readableBytes % 8 != 0)
        let blob = activationBlob([(DCOMClassID.instantiationInfo, typeSerialized(info.buffer, padded: false))])
        var b = StubBuilder()
        b.orpcThis(cid: DCOMSamples.cid)
        b.referent()
        b.interfacePointer(customObjectReference(iid: .zero, clsid: DCOMClassID.activationPropertiesIn, data: blob))
        var stub = b.buffer
        #expect(try stub.readActivationRequest(.remoteGetClassObject, syntax: .ndr32).classID == DCOMSamples.mmc20)
    }

    @Test func operationsFromInterfaceAndOpnum() {
        #expect(
            ActivationRequest.Operation(interface: DCOMInterface.remoteSCMActivator.uuid, opnum: 4)
                == .remoteCreateInstance
        )
        #expect(
            ActivationRequest.Operation(interface: DCOMInterface.remoteSCMActivator.uuid, opnum: 3)
                == .remoteGetClassObject
        )
        #expect(ActivationRequest.Operation(interface: DCOMInterface.remoteSCMActivator.uuid, opnum: 5) == nil)
        #expect(ActivationRequest.Operation(interface: DCOMInterface.activation.uuid, opnum: 0) == .remoteActivation)
        #expect(ActivationRequest.Operation(interface: DCOMInterface.objectExporter.uuid, opnum: 4) == nil)
    }
}
