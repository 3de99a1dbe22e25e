package import NIOCore
import NIOPosix
package import RPCWire

/// An interface the peer registers with its endpoint mapper and serves on its data port.
package struct RegisteredInterface: Hashable, Sendable {
    package var syntax: SyntaxID
    /// The `ept_entry_t` annotation (what Windows shows in `rpcdump`).
    package var annotation: String

    package init(syntax: SyntaxID, annotation: String) {
        self.syntax = syntax
        self.annotation = annotation
    }

    /// The bench's echo/sink interface (``BenchInterface``).
    package static let bench = RegisteredInterface(syntax: BenchInterface.syntax, annotation: "rpcgate-bench echo/sink")
}

/// A minimal DCE/RPC server over real PDUs: an endpoint mapper (`ept_map`, `ept_lookup`) that
/// knows the configured interfaces, and one data listener serving all of them, as Samba and
/// Windows serve many interfaces on one dynamic port.
///
/// The bench interface (``BenchInterface``) echoes (opnum 0) or counts (opnum 1); every other
/// registered interface answers any opnum with a 4-byte zero stub (a success status): the peer
/// implements no real operation, it only lets a gateway be watched deciding.
package enum RPCPeerServer {
    package struct Configuration: Sendable {
        package var listen: String
        /// Endpoint-mapper port; 0 picks a free one (see ``Running/epmPort``).
        package var epmPort: Int
        /// Data port of the registered interfaces; 0 picks a free one.
        package var dataPort: Int
        package var threads: Int
        /// Largest fragment this server sends or accepts; the bind negotiates down from the client's.
        package var maxFragment: Int
        /// The IPv4 address written into the towers' IP floor.
        package var advertise: IPv4Address
        package var interfaces: [RegisteredInterface]
        /// Called on an event loop for every call the data listener receives (interface, opnum).
        package var onCall: (@Sendable (SyntaxID, UInt16) -> Void)?

        package init(
            listen: String,
            epmPort: Int,
            dataPort: Int,
            threads: Int = 1,
            maxFragment: Int = Int(UInt16.max),
            advertise: IPv4Address,
            interfaces: [RegisteredInterface] = [.bench],
            onCall: (@Sendable (SyntaxID, UInt16) -> Void)? = nil
        ) {
            self.listen = listen
            self.epmPort = epmPort
            self.dataPort = dataPort
            self.threads = threads
            self.maxFragment = maxFragment
            self.advertise = advertise
            self.interfaces = interfaces
            self.onCall = onCall
        }
    }

    /// Both listeners, bound.
    package struct Running: Sendable {
        package let endpointMapper: any Channel
        package let data: any Channel

        package var epmPort: Int { self.endpointMapper.localAddress?.port ?? 0 }
        package var dataPort: Int { self.data.localAddress?.port ?? 0 }

        /// Closes both listeners (connections already accepted end when their peers close).
        package func close() async {
            try? await self.endpointMapper.close()
            try? await self.data.close()
        }
    }

    /// Binds the data listener, then the endpoint mapper whose towers name the data port.
    package static func start(_ configuration: Configuration, group: any EventLoopGroup) async throws -> Running {
        let data = try await Self.bind(
            group: group,
            host: configuration.listen,
            port: configuration.dataPort,
            role: .data(offered: configuration.interfaces.map(\.syntax), onCall: configuration.onCall),
            maxFragment: configuration.maxFragment
        )
        let dataPort = UInt16(truncatingIfNeeded: data.localAddress?.port ?? configuration.dataPort)
        let entries = configuration.interfaces.map { interface in
            EPMEntry(
                object: .zero,
                tower: ProtocolTower.ncacnIPTCP(
                    interface: interface.syntax,
                    endpoint: TCPEndpoint(address: configuration.advertise, port: dataPort)
                ),
                annotation: Array(interface.annotation.utf8) + [0]
            )
        }
        let endpointMapper: any Channel
        do {
            endpointMapper = try await Self.bind(
                group: group,
                host: configuration.listen,
                port: configuration.epmPort,
                role: .endpointMapper(entries: entries),
                maxFragment: configuration.maxFragment
            )
        } catch {
            try? await data.close()
            throw error
        }
        return Running(endpointMapper: endpointMapper, data: data)
    }

    /// Binds both listeners and runs until the process is stopped (`rpcgate-bench server`).
    package static func run(_ configuration: Configuration, announce: (String) -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let running = try await Self.start(configuration, group: group)
        announce(
            "rpcgate-bench server: epm \(running.endpointMapper.localAddress.map { "\($0)" } ?? "?"), data "
                + "\(running.data.localAddress.map { "\($0)" } ?? "?"), interfaces "
                + "\(configuration.interfaces.map { "\($0.syntax)" }.joined(separator: ", ")), "
                + "\(configuration.threads) threads"
        )
        try await running.endpointMapper.closeFuture.get()
        try await running.data.closeFuture.get()
    }

    private static func bind(
        group: any EventLoopGroup,
        host: String,
        port: Int,
        role: RPCPeerServerHandler.Role,
        maxFragment: Int
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let listenPort = UInt16(truncatingIfNeeded: channel.localAddress?.port ?? port)
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(PDUFramer(limits: PeerLimits.wire)),
                        RPCPeerServerHandler(role: role, listenPort: listenPort, maxFragment: maxFragment),
                    ])
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// One server connection: answers binds, reassembles requests and answers each call.
final class RPCPeerServerHandler: ChannelInboundHandler {
    typealias InboundIn = RawPDU
    typealias OutboundOut = ByteBuffer

    enum Role: Sendable {
        /// Answers `ept_map` and `ept_lookup` from `entries`.
        case endpointMapper(entries: [EPMEntry])
        /// Serves the `offered` interfaces; `onCall` sees every call.
        case data(offered: [SyntaxID], onCall: (@Sendable (SyntaxID, UInt16) -> Void)?)
    }

    private let role: Role
    private let listenPort: UInt16
    private let maxFragment: Int
    /// Negotiated fragment size for what this server sends (the client's max_recv_frag, capped).
    private var transmitFragment: Int
    /// Accepted presentation contexts and the interface each one carries.
    private var acceptedContexts: [UInt16: SyntaxID] = [:]
    private var assembler = FragmentAssembler(limits: PeerLimits.wire)
    private var needsFlush = false

    init(role: Role, listenPort: UInt16, maxFragment: Int) {
        self.role = role
        self.listenPort = listenPort
        self.maxFragment = maxFragment
        self.transmitFragment = min(maxFragment, 5840)
    }

    private var offeredInterfaces: [SyntaxID] {
        switch self.role {
        case .endpointMapper: return [.endpointMapper]
        case .data(let offered, _): return offered
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
                throw PeerError("a client does not send \(raw.header.packetType)")
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
        let pdu = try raw.parse(limits: PeerLimits.wire)
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
            throw PeerError("bad bind body")
        }
        let offered = self.offeredInterfaces
        var results: [PresentationResult] = []
        for element in bind.contexts {
            if element.isBindTimeFeatureNegotiation {
                // MS-RPCE 3.3.1.5.3: acknowledge, supporting no optional feature.
                results.append(
                    PresentationResult(
                        result: .negotiateAck,
                        reason: .notSpecified,
                        transferSyntax: PresentationResult.nullSyntax
                    )
                )
            } else if !offered.contains(where: {
                $0.uuid == element.abstractSyntax.uuid && $0.majorVersion == element.abstractSyntax.majorVersion
            }) {
                results.append(
                    PresentationResult(
                        result: .providerRejection,
                        reason: .abstractSyntaxNotSupported,
                        transferSyntax: PresentationResult.nullSyntax
                    )
                )
            } else if element.transferSyntaxes.contains(.ndr) {
                self.acceptedContexts[element.contextID] = element.abstractSyntax
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
            transmit = max(PeerLimits.minimumFragment, min(Int(bind.maxReceiveFragment), self.maxFragment))
            receive = max(PeerLimits.minimumFragment, min(Int(bind.maxTransmitFragment), self.maxFragment))
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
        guard case .request(let request) = try first.parse(limits: PeerLimits.wire).body else {
            throw PeerError("bad request")
        }
        let callID = first.header.callID
        guard let interface = self.acceptedContexts[request.contextID] else {
            try self.fault(
                .invalidPresentationContextID,
                callID: callID,
                contextID: request.contextID,
                context: context
            )
            return
        }
        let verifier = first.header.authLength > 0
        var stub: [ByteBuffer] = []
        stub.reserveCapacity(fragments.count)
        for fragment in fragments { stub.append(try fragment.callStub()) }

        let response: [ByteBuffer]
        if case .data(_, let onCall?) = self.role { onCall(interface, request.opnum) }
        switch self.role {
        case .data where interface.uuid == BenchInterface.syntax.uuid:
            switch request.opnum {
            case BenchInterface.echo:
                response = stub
            case BenchInterface.sink:
                var count = context.channel.allocator.buffer(capacity: 4)
                count.writeInteger(
                    UInt32(truncatingIfNeeded: stub.reduce(0) { $0 + $1.readableBytes }),
                    endianness: .little
                )
                response = [count]
            default:
                try self.fault(.operationRangeError, callID: callID, contextID: request.contextID, context: context)
                return
            }
        case .data:
            // Any operation of another interface: a zero status, the shape of most MS-RPC replies.
            var status = context.channel.allocator.buffer(capacity: 4)
            status.writeInteger(UInt32(0), endianness: .little)
            response = [status]
        case .endpointMapper(let entries):
            switch request.opnum {
            case EPMOperation.map.rawValue:
                response = [try self.answerMap(stub, entries: entries, allocator: context.channel.allocator)]
            case EPMOperation.lookup.rawValue:
                response = [try self.answerLookup(stub, entries: entries, allocator: context.channel.allocator)]
            default:
                try self.fault(.operationRangeError, callID: callID, contextID: request.contextID, context: context)
                return
            }
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

    /// `ept_map` (C706 App. O): the tower of the first entry for the asked interface (UUID and
    /// major version), "not registered" otherwise.
    private func answerMap(
        _ parts: [ByteBuffer],
        entries: [EPMEntry],
        allocator: ByteBufferAllocator
    ) throws -> ByteBuffer {
        var stub = Self.joined(parts, allocator: allocator)
        let request = try stub.readEPMMapRequest(syntax: .ndr32, endianness: .little, limits: PeerLimits.wire)
        var tower: ProtocolTower?
        if let asked = request.tower?.interface {
            tower = entries.compactMap(\.tower).first { Self.registers($0, asked) }
        }
        let reply: EPMMapResponse
        if let tower, request.maxTowers > 0 {
            reply = EPMMapResponse(maxTowers: request.maxTowers, towers: [tower], status: RPCStatus(rawValue: 0))
        } else {
            reply = .notRegistered(maxTowers: request.maxTowers)
        }
        var out = allocator.buffer(capacity: 160)
        out.writeEPMMapResponse(reply, syntax: .ndr32, endianness: .little)
        return out
    }

    /// `ept_lookup` (C706 App. O): every entry (or those of the asked interface, for
    /// `rpc_c_ep_match_by_if`) in one page, at most `max_ents`; an empty answer is "not registered".
    private func answerLookup(
        _ parts: [ByteBuffer],
        entries: [EPMEntry],
        allocator: ByteBufferAllocator
    ) throws -> ByteBuffer {
        var stub = Self.joined(parts, allocator: allocator)
        let request = try stub.readEPMLookupRequest(syntax: .ndr32, endianness: .little, limits: PeerLimits.wire)
        var matching = entries
        if request.inquiryType == Self.matchByInterface, let asked = request.interface {
            matching = entries.filter { entry in entry.tower.map { Self.registers($0, asked) } ?? false }
        }
        let page = Array(matching.prefix(Int(min(request.maxEntries, UInt32(Int32.max)))))
        let reply = EPMLookupResponse(
            entryHandle: .null,
            maxEntries: request.maxEntries,
            entries: page,
            status: page.isEmpty ? .endpointNotRegistered : RPCStatus(rawValue: 0)
        )
        var out = allocator.buffer(capacity: 64 + 160 * page.count)
        out.writeEPMLookupResponse(reply, syntax: .ndr32, endianness: .little)
        return out
    }

    /// Whether `tower` is for `interface` (UUID and major version, as clients match).
    private static func registers(_ tower: ProtocolTower, _ interface: SyntaxID) -> Bool {
        guard let registered = tower.interface else { return false }
        return registered.uuid == interface.uuid && registered.majorVersion == interface.majorVersion
    }

    /// `rpc_c_ep_match_by_if`.
    private static let matchByInterface: UInt32 = 1

    private static func joined(_ parts: [ByteBuffer], allocator: ByteBufferAllocator) -> ByteBuffer {
        var stub = allocator.buffer(capacity: parts.reduce(0) { $0 + $1.readableBytes })
        for var part in parts { stub.writeBuffer(&part) }
        return stub
    }

    private func fault(_ status: RPCStatus, callID: UInt32, contextID: UInt16, context: ChannelHandlerContext) throws {
        let fault = PDU.fault(callID: callID, contextID: contextID, status: status)
        context.write(self.wrapOutboundOut(try fault.serialized(allocator: context.channel.allocator)), promise: nil)
        self.needsFlush = true
    }
}
