import NIOCore
import NIOPosix
import RPCWire

/// A minimal DCE/RPC server over real PDUs: an endpoint mapper that knows one interface, and a data
/// listener serving that interface (``BenchInterface``).
enum BenchServer {
    struct Configuration: Sendable {
        var listen: String
        var epmPort: Int
        var dataPort: Int
        var threads: Int
        /// Largest fragment this server sends or accepts; the bind negotiates down from the client's.
        var maxFragment: Int
        /// The IPv4 address written into the tower's IP floor.
        var advertise: IPv4Address
    }

    /// Binds both listeners and runs until the process is stopped.
    static func run(_ configuration: Configuration) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let epm = try await Self.bind(
            group: group,
            host: configuration.listen,
            port: configuration.epmPort,
            role: .endpointMapper(
                tower: ProtocolTower.ncacnIPTCP(
                    interface: BenchInterface.syntax,
                    endpoint: TCPEndpoint(address: configuration.advertise, port: UInt16(configuration.dataPort))
                )
            ),
            maxFragment: configuration.maxFragment
        )
        let data = try await Self.bind(
            group: group,
            host: configuration.listen,
            port: configuration.dataPort,
            role: .data,
            maxFragment: configuration.maxFragment
        )
        stderrLine(
            "rpcgate-bench server: epm \(epm.localAddress.map { "\($0)" } ?? "?"), data "
                + "\(data.localAddress.map { "\($0)" } ?? "?"), interface \(BenchInterface.syntax), "
                + "\(configuration.threads) threads"
        )
        try await epm.closeFuture.get()
        try await data.closeFuture.get()
    }

    private static func bind(
        group: any EventLoopGroup,
        host: String,
        port: Int,
        role: BenchServerHandler.Role,
        maxFragment: Int
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(PDUFramer(limits: BenchLimits.wire)),
                        BenchServerHandler(role: role, listenPort: UInt16(port), maxFragment: maxFragment),
                    ])
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// One server connection: answers binds, reassembles requests and answers each call.
final class BenchServerHandler: ChannelInboundHandler {
    typealias InboundIn = RawPDU
    typealias OutboundOut = ByteBuffer

    enum Role: Sendable {
        /// Answers `ept_map` for the bench interface with `tower`; everything else is not registered.
        case endpointMapper(tower: ProtocolTower)
        case data
    }

    private let role: Role
    private let listenPort: UInt16
    private let maxFragment: Int
    /// Negotiated fragment size for what this server sends (the client's max_recv_frag, capped).
    private var transmitFragment: Int
    private var acceptedContexts: Set<UInt16> = []
    private var assembler = FragmentAssembler(limits: BenchLimits.wire)
    private var needsFlush = false

    init(role: Role, listenPort: UInt16, maxFragment: Int) {
        self.role = role
        self.listenPort = listenPort
        self.maxFragment = maxFragment
        self.transmitFragment = min(maxFragment, 5840)
    }

    private var offeredInterface: SyntaxID {
        switch self.role {
        case .endpointMapper: return .endpointMapper
        case .data: return BenchInterface.syntax
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let raw = self.unwrapInboundIn(data)
        do {
            switch raw.header.packetType {
            case .bind, .alterContext:
                try self.answerBind(raw, context: context)
            case .request:
                try self.answerRequest(raw, context: context)
            case .auth3, .coCancel, .orphaned, .shutdown:
                break
            default:
                throw BenchError("a client does not send \(raw.header.packetType)")
            }
        } catch {
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: - Bind

    private func answerBind(_ raw: RawPDU, context: ChannelHandlerContext) throws {
        let pdu = try raw.parse(limits: BenchLimits.wire)
        let bind: BindPDU
        let isAlter: Bool
        switch pdu.body {
        case .bind(let body):
            bind = body
            isAlter = false
        case .alterContext(let body):
            bind = body
            isAlter = true
        default:
            throw BenchError("bad bind body")
        }
        let wanted = self.offeredInterface
        var results: [PresentationResult] = []
        for element in bind.contexts {
            if element.isBindTimeFeatureNegotiation {
                // MS-RPCE 3.3.1.5.3: acknowledge, supporting no optional feature.
                results.append(
                    PresentationResult(result: .negotiateAck, reason: .notSpecified, transferSyntax: PresentationResult.nullSyntax)
                )
            } else if element.abstractSyntax.uuid != wanted.uuid || element.abstractSyntax.majorVersion != wanted.majorVersion {
                results.append(
                    PresentationResult(
                        result: .providerRejection,
                        reason: .abstractSyntaxNotSupported,
                        transferSyntax: PresentationResult.nullSyntax
                    )
                )
            } else if element.transferSyntaxes.contains(.ndr) {
                self.acceptedContexts.insert(element.contextID)
                results.append(PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr))
            } else {
                results.append(
                    PresentationResult(
                        result: .providerRejection,
                        reason: .proposedTransferSyntaxesNotSupported,
                        transferSyntax: PresentationResult.nullSyntax
                    )
                )
            }
        }
        // C706 12.6.4.4: max_xmit_frag of the ack is what this side sends, at most the client's
        // max_recv_frag; max_recv_frag what it accepts, at most the client's max_xmit_frag.
        var transmit = self.transmitFragment
        var receive = self.maxFragment
        if !isAlter {
            transmit = max(BenchLimits.minimumFragment, min(Int(bind.maxReceiveFragment), self.maxFragment))
            receive = max(BenchLimits.minimumFragment, min(Int(bind.maxTransmitFragment), self.maxFragment))
            self.transmitFragment = transmit
        }
        let ack = BindAckPDU(
            maxTransmitFragment: UInt16(transmit),
            maxReceiveFragment: UInt16(receive),
            associationGroupID: bind.associationGroupID == 0 ? 0x0000_bea7 : bind.associationGroupID,
            secondaryAddress: isAlter ? [] : BindAckPDU.secondaryAddress(port: self.listenPort),
            results: results
        )
        let reply = PDU(
            header: PDUHeader(
                packetType: isAlter ? .alterContextResponse : .bindAck,
                dataRepresentation: raw.header.dataRepresentation,
                callID: raw.header.callID
            ),
            body: isAlter ? .alterContextResponse(ack) : .bindAck(ack)
        )
        context.write(self.wrapOutboundOut(try reply.serialized(allocator: context.channel.allocator)), promise: nil)
        self.needsFlush = true
    }

    // MARK: - Calls

    private func answerRequest(_ raw: RawPDU, context: ChannelHandlerContext) throws {
        guard let fragments = try self.assembler.append(raw), let first = fragments.first else { return }
        guard case .request(let request) = try first.parse(limits: BenchLimits.wire).body else {
            throw BenchError("bad request")
        }
        let callID = first.header.callID
        guard self.acceptedContexts.contains(request.contextID) else {
            try self.fault(.invalidPresentationContextID, callID: callID, contextID: request.contextID, context: context)
            return
        }
        let verifier = first.header.authLength > 0
        var stub: [ByteBuffer] = []
        stub.reserveCapacity(fragments.count)
        for fragment in fragments { stub.append(try fragment.callStub()) }

        let response: [ByteBuffer]
        switch (self.role, request.opnum) {
        case (.data, BenchInterface.echo):
            response = stub
        case (.data, BenchInterface.sink):
            var count = context.channel.allocator.buffer(capacity: 4)
            count.writeInteger(UInt32(truncatingIfNeeded: stub.reduce(0) { $0 + $1.readableBytes }), endianness: .little)
            response = [count]
        case (.endpointMapper(let tower), EPMOperation.map.rawValue):
            response = [try self.answerMap(stub, tower: tower, allocator: context.channel.allocator)]
        default:
            try self.fault(.operationRangeError, callID: callID, contextID: request.contextID, context: context)
            return
        }
        CallFragmenter.fragments(
            .response,
            callID: callID,
            contextID: request.contextID,
            stub: response,
            maxFragment: self.transmitFragment,
            verifier: verifier,
            allocator: context.channel.allocator
        ) { part in
            context.write(self.wrapOutboundOut(part), promise: nil)
        }
        self.needsFlush = true
    }

    /// `ept_map` (C706 App. O): one tower for the bench interface, "not registered" otherwise.
    private func answerMap(_ parts: [ByteBuffer], tower: ProtocolTower, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var stub = allocator.buffer(capacity: parts.reduce(0) { $0 + $1.readableBytes })
        for var part in parts { stub.writeBuffer(&part) }
        let request = try stub.readEPMMapRequest(syntax: .ndr32, endianness: .little, limits: BenchLimits.wire)
        let asked = request.tower?.interface
        let known =
            asked.map { $0.uuid == BenchInterface.syntax.uuid && $0.majorVersion == BenchInterface.syntax.majorVersion }
            ?? false
        let reply: EPMMapResponse
        if known, request.maxTowers > 0 {
            reply = EPMMapResponse(maxTowers: request.maxTowers, towers: [tower], status: RPCStatus(rawValue: 0))
        } else {
            reply = .notRegistered(maxTowers: request.maxTowers)
        }
        var out = allocator.buffer(capacity: 160)
        out.writeEPMMapResponse(reply, syntax: .ndr32, endianness: .little)
        return out
    }

    private func fault(_ status: RPCStatus, callID: UInt32, contextID: UInt16, context: ChannelHandlerContext) throws {
        let fault = PDU.fault(callID: callID, contextID: contextID, status: status)
        context.write(self.wrapOutboundOut(try fault.serialized(allocator: context.channel.allocator)), promise: nil)
        self.needsFlush = true
    }
}
