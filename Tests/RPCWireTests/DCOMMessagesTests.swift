import DCOMTestStubs
import NIOCore
import RPCWire
import Testing

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
