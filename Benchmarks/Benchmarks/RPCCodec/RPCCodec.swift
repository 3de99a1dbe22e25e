import Benchmark
import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire

// Micro-benchmarks of the per-PDU work rpcgate does: framing, bind parsing, endpoint-mapper reply
// rewriting and the connection state machine. Every input is built with RPCWire's public
// builders, shaped like what Windows, Samba and impacket send (docs: dcerpc-wire.md).
//
// Counts are per iteration of the body (the framework divides by the scaling factor).

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000
    )

    setUpBenchmarks()

    // MARK: Framing

    let stream = Inputs.requestStream()
    Benchmark(
        "Framer: stream of \(stream.pdus) request PDUs (64 x 1 KiB calls, one 64 KiB call in 5840-byte fragments)"
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            var framer = PDUFramer()
            var buffer = stream.bytes
            var count = 0
            while let pdu = try framer.decode(buffer: &buffer) {
                blackHole(pdu)
                count += 1
            }
            blackHole(count)
        }
    }

    // MARK: Bind parsing

    let bind = Inputs.windowsBind()
    Benchmark("Parse Windows-style bind (NDR, NDR64, feature negotiation; NTLM trailer)") { benchmark in
        for _ in benchmark.scaledIterations {
            guard let header = try bind.peekPDUHeader(limits: WireLimits()) else { continue }
            blackHole(try RawPDU(header: header, bytes: bind).parse())
        }
    }

    // MARK: Endpoint-mapper rewriting

    let lookup = Inputs.lookupReply(entries: 100, fragment: 4280)
    Benchmark(
        "Rewrite ept_lookup reply (100 ncacn_ip_tcp towers, \(lookup.count) fragments of at most 4280 bytes)",
        configuration: .init(scalingFactor: .one)
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(
                try EPMReplyRewriter.rewrite(
                    fragments: lookup,
                    operation: .lookup,
                    syntax: .ndr32,
                    limits: WireLimits(),
                    endpointFor: Inputs.gatewayEndpoint
                )
            )
        }
    }

    let map = Inputs.mapReply()
    Benchmark("Rewrite ept_map reply (1 tower, 1 fragment)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(
                try EPMReplyRewriter.rewrite(
                    fragments: map,
                    operation: .map,
                    syntax: .ndr32,
                    limits: WireLimits(),
                    endpointFor: Inputs.gatewayEndpoint
                )
            )
        }
    }

    // MARK: State machine

    for (inspecting, authTrailer, stubSize) in [
        (true, false, 100), (false, false, 100), (true, true, 100), (true, false, 5792),
    ] {
        let call = Inputs.call(stubSize: stubSize, authTrailer: authTrailer)
        let name =
            "State machine: request + response on a bound connection (\(stubSize)-byte stub"
            + (authTrailer ? ", NTLM trailer" : "")
            + (inspecting ? ", 20-rule policy with opnum inspection)" : ", 20-rule policy, binds only)")
        Benchmark(name) { benchmark in
            var machine = Inputs.boundMachine(policy: Inputs.policy(inspectingOperations: inspecting))
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(machine.clientSent(call.request))
                blackHole(machine.serverSent(call.response))
            }
            benchmark.stopMeasurement()
            blackHole(machine.takeEvents())
        }
    }

    // MARK: Forwarding (a glue handler's work per read, without the socket)

    // Each read is framed by PDUStream (what RPCGlueHandler does) and the PDU decided by the state
    // machine: the steady-state work per forwarded request and response. Whole-PDU reads are
    // sliced without copying; a read that ends inside a PDU has to keep that PDU's head, and the
    // next read completes it (copied once into new storage while the slice is still referenced).
    for (split, stubSize) in [(false, 100), (false, 5792), (true, 5792)] {
        let call = Inputs.call(stubSize: stubSize, authTrailer: false)
        let name =
            "Forward: request + response reads framed by PDUStream and decided by the state machine (\(stubSize)-byte stub, "
            + (split ? "each PDU split across two reads)" : "one PDU per read)")
        Benchmark(name) { benchmark in
            var machine = Inputs.boundMachine(policy: Inputs.policy(inspectingOperations: true))
            var fromClient = PDUStream()
            var fromServer = PDUStream()
            let reads = { (bytes: ByteBuffer) -> [ByteBuffer] in
                guard split else { return [bytes] }
                let half = bytes.readableBytes / 2
                return [
                    bytes.getSlice(at: bytes.readerIndex, length: half) ?? bytes,
                    bytes.getSlice(at: bytes.readerIndex + half, length: bytes.readableBytes - half) ?? bytes,
                ]
            }
            let requestReads = reads(call.request.bytes)
            let responseReads = reads(call.response.bytes)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for read in requestReads {
                    fromClient.append(read)
                    while let pdu = try fromClient.nextPDU() { blackHole(machine.clientSent(pdu)) }
                }
                for read in responseReads {
                    fromServer.append(read)
                    while let pdu = try fromServer.nextPDU() { blackHole(machine.serverSent(pdu)) }
                }
            }
            benchmark.stopMeasurement()
            blackHole(machine.takeEvents())
        }
    }
}

/// Inputs built with RPCWire's public builders.
enum Inputs {
    static let bench = SyntaxID(
        uuid: DCEUUID(high: 0xa0b1_c2d3_0000_4000, low: 0x8000_0000_0000_beef),
        majorVersion: 1,
        minorVersion: 0
    )
    static let featureNegotiation = SyntaxID(
        uuid: DCEUUID(high: 0x6cb7_1c2c_9812_4540, low: 0x0300_0000_0000_0000),
        majorVersion: 1,
        minorVersion: 0
    )

    static func serialize(_ pdu: PDU) -> ByteBuffer {
        (try? pdu.serialized()) ?? ByteBuffer()
    }

    static func raw(_ bytes: ByteBuffer) -> RawPDU {
        guard let header = try? bytes.peekPDUHeader(limits: WireLimits()) else {
            fatalError("benchmark input does not frame")
        }
        return RawPDU(header: header, bytes: bytes)
    }

    static func stub(_ size: Int) -> ByteBuffer {
        ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
    }

    static func ntlm() -> AuthVerifier {
        AuthVerifier(
            authType: .ntlm,
            authLevel: .connect,
            contextID: 0x79231,
            value: ByteBuffer(repeating: 0x5A, count: 16)
        )
    }

    /// The fragments of one call, FIRST_FRAG..LAST_FRAG, each at most `fragment` bytes.
    static func callFragments(
        _ stub: ByteBuffer,
        request opnum: UInt16?,
        callID: UInt32,
        fragment: Int,
        verifier: AuthVerifier? = nil
    ) -> [ByteBuffer] {
        var remaining = stub
        var out: [ByteBuffer] = []
        let capacity = fragment - 24 - (verifier == nil ? 0 : 24 + 16)
        repeat {
            let hint = UInt32(remaining.readableBytes)
            let piece = remaining.readSlice(length: min(capacity, remaining.readableBytes)) ?? ByteBuffer()
            var flags: PFCFlags = out.isEmpty ? [.firstFragment] : []
            if remaining.readableBytes == 0 { flags.insert(.lastFragment) }
            var auth = verifier
            if var v = auth {
                v.padding = ByteBuffer(repeating: 0, count: (16 - piece.readableBytes % 16) % 16)
                auth = v
            }
            let body: PDU.Body =
                opnum.map { .request(RequestPDU(allocationHint: hint, contextID: 0, opnum: $0, stub: piece)) }
                ?? .response(ResponsePDU(allocationHint: hint, contextID: 0, stub: piece))
            out.append(
                Self.serialize(
                    PDU(
                        header: PDUHeader(
                            packetType: opnum == nil ? .response : .request,
                            flags: flags,
                            callID: callID
                        ),
                        body: body,
                        authVerifier: auth
                    )
                )
            )
        } while remaining.readableBytes > 0
        return out
    }

    /// 64 single-fragment calls of 1 KiB, then one 64 KiB call in 5840-byte fragments.
    static func requestStream() -> (bytes: ByteBuffer, pdus: Int) {
        var stream = ByteBuffer()
        var pdus = 0
        for callID in 1...64 {
            for var fragment in Self.callFragments(Self.stub(1024), request: 0, callID: UInt32(callID), fragment: 5840)
            {
                stream.writeBuffer(&fragment)
                pdus += 1
            }
        }
        for var fragment in Self.callFragments(Self.stub(65536), request: 0, callID: 65, fragment: 5840) {
            stream.writeBuffer(&fragment)
            pdus += 1
        }
        return (stream, pdus)
    }

    /// A bind as Windows sends it: one interface offered over NDR, NDR64 and bind-time feature
    /// negotiation, with an NTLM NEGOTIATE-sized token.
    static func windowsBind() -> ByteBuffer {
        let samr = SyntaxID(
            uuid: DCEUUID(high: 0x1234_5778_1234_abcd, low: 0xef00_0123_4567_89ac),
            majorVersion: 1,
            minorVersion: 0
        )
        let bind = PDU(
            header: PDUHeader(
                packetType: .bind,
                flags: [.firstFragment, .lastFragment, .pendingCancelOrSupportHeaderSign],
                callID: 2
            ),
            body: .bind(
                BindPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 0,
                    contexts: [
                        PresentationContext(contextID: 0, abstractSyntax: samr, transferSyntaxes: [.ndr]),
                        PresentationContext(contextID: 1, abstractSyntax: samr, transferSyntaxes: [.ndr64]),
                        PresentationContext(
                            contextID: 2,
                            abstractSyntax: samr,
                            transferSyntaxes: [Self.featureNegotiation]
                        ),
                    ]
                )
            ),
            authVerifier: AuthVerifier(
                authType: .ntlm,
                authLevel: .integrity,
                contextID: 0x79231,
                value: ByteBuffer(repeating: 0x4E, count: 40)
            )
        )
        return Self.serialize(bind)
    }

    /// An `ept_lookup` reply like rpcdump gets from a DC, split into response fragments.
    static func lookupReply(entries: Int, fragment: Int) -> [RawPDU] {
        let catalog = InterfaceCatalog.all
        let annotation = Array("Impl friendly name".utf8) + [0]
        let reply = EPMLookupResponse(
            entryHandle: EPMContextHandle(attributes: 0, uuid: DCEUUID(high: 0x1111, low: 0x2222)),
            maxEntries: UInt32(entries),
            entries: (0..<entries).map { index in
                EPMEntry(
                    object: .zero,
                    tower: ProtocolTower.ncacnIPTCP(
                        interface: catalog[index % catalog.count].syntax,
                        endpoint: TCPEndpoint(address: IPv4Address(10, 0, 0, 2), port: UInt16(49664 + index % 8))
                    ),
                    annotation: annotation
                )
            },
            status: RPCStatus(rawValue: 0)
        )
        var stub = ByteBuffer()
        stub.writeEPMLookupResponse(reply, syntax: .ndr32)
        return Self.callFragments(stub, request: nil, callID: 3, fragment: fragment).map(Self.raw)
    }

    static func mapReply() -> [RawPDU] {
        let reply = EPMMapResponse(
            maxTowers: 4,
            towers: [
                ProtocolTower.ncacnIPTCP(
                    interface: Self.bench,
                    endpoint: TCPEndpoint(address: IPv4Address(10, 0, 0, 2), port: 49667)
                )
            ],
            status: RPCStatus(rawValue: 0)
        )
        var stub = ByteBuffer()
        stub.writeEPMMapResponse(reply, syntax: .ndr32)
        return Self.callFragments(stub, request: nil, callID: 2, fragment: 5840).map(Self.raw)
    }

    /// What the gateway's closure does on the common path: an existing mapping to one of its ports.
    @Sendable static func gatewayEndpoint(_ tower: EPMTowerEndpoint) -> TCPEndpoint? {
        TCPEndpoint(address: IPv4Address(192, 0, 2, 1), port: 50000 &+ tower.endpoint.port % 100)
    }

    /// The compare.sh policy: 19 rules about catalog interfaces, then the bench interface allowed.
    /// With `inspectingOperations`, one rule has opnums, so every request is evaluated.
    static func policy(inspectingOperations: Bool) -> Policy {
        var rules: [PolicyRule] = []
        let names = [
            "drsuapi", "backupkey", "samr", "lsarpc", "netlogon", "dssetup", "dnsserver", "srvsvc", "wkssvc",
            "winreg", "svcctl", "atsvc", "sasec", "taskscheduler", "spoolss", "par", "efsrpc", "lsarpc-efs", "dfsnm",
        ]
        for (index, name) in names.enumerated() {
            guard let entry = InterfaceCatalog.named(name) else { continue }
            let matcher = InterfaceMatcher(
                uuid: entry.syntax.uuid,
                majorVersion: entry.syntax.majorVersion,
                label: name
            )
            var rule = PolicyRule(
                action: index % 3 == 0 ? .deny : .allow,
                interfaces: [matcher],
                origin: RuleOrigin(index: index)
            )
            if index == 0, inspectingOperations {
                rule.opnums = OpnumSet([3...3])
                rule.exceptSources = [IPNetwork("10.0.0.11/32"), IPNetwork("10.0.0.12/32")].compactMap { $0 }
            }
            rule.sources = [IPNetwork("10.0.0.0/8"), IPNetwork("127.0.0.0/8")].compactMap { $0 }
            rules.append(rule)
        }
        rules.append(
            PolicyRule(
                action: .allow,
                interfaces: [InterfaceMatcher(uuid: Self.bench.uuid, majorVersion: 1, label: "bench")],
                sources: [IPNetwork("127.0.0.0/8")].compactMap { $0 },
                origin: RuleOrigin(index: names.count)
            )
        )
        return Policy(name: "bench", defaultAction: .deny, rules: rules)
    }

    static func boundMachine(policy: Policy) -> ConnectionStateMachine {
        var machine = ConnectionStateMachine.spliced(
            role: .mapped,
            policy: policy,
            client: IPAddress("127.0.0.1") ?? .v4(0x7f00_0001),
            limits: WireLimits()
        )
        let bind = PDU(
            header: PDUHeader(packetType: .bind, callID: 1),
            body: .bind(
                BindPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 0,
                    contexts: [PresentationContext(contextID: 0, abstractSyntax: Self.bench, transferSyntaxes: [.ndr])]
                )
            )
        )
        let ack = PDU(
            header: PDUHeader(packetType: .bindAck, callID: 1),
            body: .bindAck(
                BindAckPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 0x1234,
                    secondaryAddress: BindAckPDU.secondaryAddress(port: 49667),
                    results: [PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr)]
                )
            )
        )
        guard case .forward = machine.clientSent(Self.raw(Self.serialize(bind))),
            case .forward = machine.serverSent(Self.raw(Self.serialize(ack))), machine.isBound
        else { fatalError("bench interface not bound; check the policy") }
        _ = machine.takeEvents()
        return machine
    }

    /// One single-fragment request and its response.
    static func call(stubSize: Int, authTrailer: Bool) -> (request: RawPDU, response: RawPDU) {
        let verifier = authTrailer ? Self.ntlm() : nil
        let request = Self.callFragments(Self.stub(stubSize), request: 0, callID: 7, fragment: 5840, verifier: verifier)
        let response = Self.callFragments(
            Self.stub(stubSize),
            request: nil,
            callID: 7,
            fragment: 5840,
            verifier: verifier
        )
        return (Self.raw(request[0]), Self.raw(response[0]))
    }
}
