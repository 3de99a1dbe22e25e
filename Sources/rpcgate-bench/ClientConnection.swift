import NIOCore
import NIOPosix
import RPCWire

/// One client connection to a DCE/RPC server: bind, then one call at a time.
///
/// Confined to its channel's event loop: every method must be called there, and every completion
/// runs there. Completions are plain closures so a driver can chain steps without futures.
final class RPCClientConnection: ChannelInboundHandler {
    typealias InboundIn = RawPDU
    typealias OutboundOut = ByteBuffer

    struct CallResult {
        /// Stub bytes received (all fragments).
        var stubBytes: Int
        /// The stub slices, when the call asked to collect them.
        var stub: [ByteBuffer]
    }

    private enum Pending {
        case none
        case bind((Result<Void, any Error>) -> Void)
        case call(collect: Bool, (Result<CallResult, any Error>) -> Void)
    }

    private var context: ChannelHandlerContext?
    private var pending: Pending = .none
    private var nextCallID: UInt32 = 1
    /// What the server accepts from us: min(our fragment, its max_recv_frag).
    private(set) var transmitFragment: Int = 5840
    private var receivedStubBytes = 0
    private var receivedStub: [ByteBuffer] = []
    private(set) var isClosed = false
    /// Called once when the channel goes inactive.
    var onClose: (() -> Void)?

    var channel: (any Channel)? { self.context?.channel }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Operations

    /// Binds context 0 to `interface` over NDR, offering `fragment` as max_xmit/max_recv.
    func bind(_ interface: SyntaxID, fragment: Int, completion: @escaping (Result<Void, any Error>) -> Void) {
        guard let context = self.context, !self.isClosed, case .none = self.pending else {
            completion(.failure(BenchError("bind on a closed or busy connection")))
            return
        }
        let callID = self.takeCallID()
        let pdu = PDU(
            header: PDUHeader(packetType: .bind, callID: callID),
            body: .bind(
                BindPDU(
                    maxTransmitFragment: UInt16(fragment),
                    maxReceiveFragment: UInt16(fragment),
                    associationGroupID: 0,
                    contexts: [PresentationContext(contextID: 0, abstractSyntax: interface, transferSyntaxes: [.ndr])]
                )
            )
        )
        do {
            let bytes = try pdu.serialized(allocator: context.channel.allocator)
            self.transmitFragment = fragment
            self.pending = .bind(completion)
            context.writeAndFlush(self.wrapOutboundOut(bytes), promise: nil)
        } catch {
            completion(.failure(error))
        }
    }

    /// Sends one call on context 0, fragmented to the negotiated size; completes at LAST_FRAG.
    func call(
        opnum: UInt16,
        stub: ByteBuffer,
        verifier: Bool,
        collect: Bool = false,
        completion: @escaping (Result<CallResult, any Error>) -> Void
    ) {
        guard let context = self.context, !self.isClosed, case .none = self.pending else {
            completion(.failure(BenchError("call on a closed or busy connection")))
            return
        }
        self.pending = .call(collect: collect, completion)
        self.receivedStubBytes = 0
        self.receivedStub.removeAll(keepingCapacity: true)
        CallFragmenter.fragments(
            .request(opnum: opnum),
            callID: self.takeCallID(),
            contextID: 0,
            stub: [stub],
            maxFragment: self.transmitFragment,
            verifier: verifier,
            allocator: context.channel.allocator
        ) { part in
            context.write(self.wrapOutboundOut(part), promise: nil)
        }
        context.flush()
    }

    func close() {
        self.context?.close(promise: nil)
    }

    private func takeCallID() -> UInt32 {
        defer { self.nextCallID &+= 1 }
        return self.nextCallID
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let raw = self.unwrapInboundIn(data)
        switch (raw.header.packetType, self.pending) {
        case (.bindAck, .bind(let completion)), (.alterContextResponse, .bind(let completion)):
            self.pending = .none
            do {
                guard case .bindAck(let ack) = try raw.parse(limits: BenchLimits.wire).body,
                    let result = ack.results.first
                else { throw BenchError("malformed bind_ack") }
                guard result.result == .acceptance else {
                    throw BenchError("bind refused: result \(result.result.rawValue) reason \(result.reason.rawValue)")
                }
                self.transmitFragment = min(self.transmitFragment, Int(ack.maxReceiveFragment))
                completion(.success(()))
            } catch {
                completion(.failure(error))
            }
        case (.bindNak, .bind(let completion)):
            self.pending = .none
            completion(.failure(BenchError("bind_nak")))
        case (.response, .call(let collect, let completion)):
            do {
                let stub = try raw.callStub()
                self.receivedStubBytes += stub.readableBytes
                if collect { self.receivedStub.append(stub) }
            } catch {
                self.pending = .none
                completion(.failure(error))
                return
            }
            if raw.header.flags.contains(.lastFragment) {
                self.pending = .none
                let result = CallResult(stubBytes: self.receivedStubBytes, stub: self.receivedStub)
                self.receivedStub = []
                completion(.success(result))
            }
        case (.fault, .call(_, let completion)):
            self.pending = .none
            let status = (try? raw.parse(limits: BenchLimits.wire)).flatMap { pdu -> RPCStatus? in
                if case .fault(let fault) = pdu.body { return fault.status }
                return nil
            }
            completion(.failure(BenchError("fault \(status.map { "\($0)" } ?? "?")")))
        default:
            self.fail(BenchError("unexpected \(raw.header.packetType)"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isClosed = true
        self.fail(BenchError("connection closed by peer"))
        let onClose = self.onClose
        self.onClose = nil
        onClose?()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        switch self.pending {
        case .none:
            break
        case .bind(let completion):
            self.pending = .none
            completion(.failure(error))
        case .call(_, let completion):
            self.pending = .none
            completion(.failure(error))
        }
    }
}

// MARK: - Connecting and resolving

enum RPCClient {
    /// Connects to `target` on `loop`; the completion runs on `loop`. Must be called on `loop`.
    static func connect(
        to target: HostPort,
        on loop: any EventLoop,
        completion: @escaping (Result<RPCClientConnection, any Error>) -> Void
    ) {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(PDUFramer(limits: BenchLimits.wire)),
                        RPCClientConnection(),
                    ])
                }
            }
            .connect(host: target.host, port: target.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    do {
                        completion(.success(try channel.pipeline.syncOperations.handler(type: RPCClientConnection.self)))
                    } catch {
                        channel.close(promise: nil)
                        completion(.failure(error))
                    }
                case .failure(let error):
                    completion(.failure(error))
                }
            }
    }

    /// Connects to `target`, binds `interface`; on failure the connection is closed.
    static func connectAndBind(
        to target: HostPort,
        interface: SyntaxID,
        fragment: Int,
        on loop: any EventLoop,
        completion: @escaping (Result<RPCClientConnection, any Error>) -> Void
    ) {
        Self.connect(to: target, on: loop) { result in
            switch result {
            case .failure(let error):
                completion(.failure(error))
            case .success(let connection):
                connection.bind(interface, fragment: fragment) { bound in
                    switch bound {
                    case .success:
                        completion(.success(connection))
                    case .failure(let error):
                        connection.close()
                        completion(.failure(error))
                    }
                }
            }
        }
    }

    /// The `ept_map` request stub for the bench interface over ncacn_ip_tcp, as Windows and
    /// impacket send it (no object, a tower with port 0 and address 0.0.0.0, max_towers 4).
    static func mapRequestStub() -> ByteBuffer {
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(
            EPMMapRequest(
                object: nil,
                tower: ProtocolTower.ncacnIPTCP(
                    interface: BenchInterface.syntax,
                    endpoint: TCPEndpoint(address: .any, port: 0)
                ),
                entryHandle: .null,
                maxTowers: 4
            ),
            syntax: .ndr32,
            endianness: .little
        )
        return stub
    }

    /// Asks the endpoint mapper at `epm` where the bench interface listens, as real clients do:
    /// anonymous bind to the mapper, `ept_map`, first tower's TCP port, the host that was dialled.
    static func resolve(
        epm: HostPort,
        fragment: Int,
        on loop: any EventLoop,
        completion: @escaping (Result<HostPort, any Error>) -> Void
    ) {
        Self.connectAndBind(to: epm, interface: .endpointMapper, fragment: fragment, on: loop) { result in
            switch result {
            case .failure(let error):
                completion(.failure(error))
            case .success(let connection):
                connection.call(opnum: EPMOperation.map.rawValue, stub: Self.mapRequestStub(), verifier: false, collect: true) {
                    called in
                    connection.close()
                    do {
                        var stub = ByteBuffer()
                        for var part in try called.get().stub { stub.writeBuffer(&part) }
                        let response = try stub.readEPMMapResponse(syntax: .ndr32, endianness: .little, limits: BenchLimits.wire)
                        guard response.status.rawValue == 0, let tower = response.towers.compactMap({ $0 }).first,
                            tower.isNCACNIPTCP, let port = tower.tcpPort, port != 0
                        else {
                            throw BenchError("ept_map: no usable tower (status \(response.status))")
                        }
                        completion(.success(HostPort(host: epm.host, port: Int(port))))
                    } catch {
                        completion(.failure(error))
                    }
                }
            }
        }
    }
}
