package import NIOCore
import NIOPosix
package import RPCWire

/// One client connection to a DCE/RPC server: bind, then one call at a time.
///
/// Confined to its channel's event loop: every method must be called there, and every completion
/// runs there. Completions are plain closures so a driver can chain steps without futures.
package final class RPCClientConnection: ChannelInboundHandler {
    package typealias InboundIn = RawPDU
    package typealias OutboundOut = ByteBuffer

    package struct CallResult: Sendable {
        /// Stub bytes received (all fragments).
        package var stubBytes: Int
        /// The stub slices, when the call asked to collect them.
        package var stub: [ByteBuffer]
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
    package private(set) var transmitFragment: Int = 5840
    private var receivedStubBytes = 0
    private var receivedStub: [ByteBuffer] = []
    package private(set) var isClosed = false
    /// Called once when the channel goes inactive.
    package var onClose: (() -> Void)?

    package var channel: (any Channel)? { self.context?.channel }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Operations

    /// Binds context 0 to `interface` over NDR, offering `fragment` as max_xmit/max_recv.
    package func bind(_ interface: SyntaxID, fragment: Int, completion: @escaping (Result<Void, any Error>) -> Void) {
        guard let context = self.context, !self.isClosed, case .none = self.pending else {
            completion(.failure(PeerError("bind on a closed or busy connection")))
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
    package func call(
        opnum: UInt16,
        stub: ByteBuffer,
        verifier: Bool,
        collect: Bool = false,
        completion: @escaping (Result<CallResult, any Error>) -> Void
    ) {
        guard let context = self.context, !self.isClosed, case .none = self.pending else {
            completion(.failure(PeerError("call on a closed or busy connection")))
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

    package func close() {
        self.context?.close(promise: nil)
    }

    private func takeCallID() -> UInt32 {
        defer { self.nextCallID &+= 1 }
        return self.nextCallID
    }

    // MARK: - Inbound

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let raw = self.unwrapInboundIn(data)
        switch (raw.header.packetType, self.pending) {
        case (.bindAck, .bind(let completion)), (.alterContextResponse, .bind(let completion)):
            self.pending = .none
            do {
                guard case .bindAck(let ack) = try raw.parse(limits: PeerLimits.wire).body,
                    let result = ack.results.first
                else { throw PeerError("malformed bind_ack") }
                guard result.result == .acceptance else {
                    throw BindRefused(result: result.result.rawValue, reason: result.reason.rawValue)
                }
                self.transmitFragment = min(self.transmitFragment, Int(ack.maxReceiveFragment))
                completion(.success(()))
            } catch {
                completion(.failure(error))
            }
        case (.bindNak, .bind(let completion)):
            self.pending = .none
            completion(.failure(PeerError("bind_nak")))
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
            let status = (try? raw.parse(limits: PeerLimits.wire)).flatMap { pdu -> RPCStatus? in
                if case .fault(let fault) = pdu.body { return fault.status }
                return nil
            }
            completion(.failure(CallFaulted(status: status)))
        default:
            self.fail(PeerError("unexpected \(raw.header.packetType)"))
            context.close(promise: nil)
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        self.isClosed = true
        self.fail(PeerError("connection closed by peer"))
        let onClose = self.onClose
        self.onClose = nil
        onClose?()
        context.fireChannelInactive()
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
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

/// A `bind_ack` or `alter_context_resp` that rejected the (first) presentation context.
package struct BindRefused: Error, CustomStringConvertible {
    /// `p_cont_def_result_t`: 1 user rejection, 2 provider rejection.
    package var result: UInt16
    /// `p_provider_reason_t`: 1 abstract syntax not supported, 2 transfer syntaxes not supported.
    package var reason: UInt16

    package var description: String { "bind refused: result \(self.result) reason \(self.reason)" }
}

/// A call answered with a `fault` PDU.
package struct CallFaulted: Error, CustomStringConvertible {
    /// The fault status, `nil` when the fault PDU could not be parsed.
    package var status: RPCStatus?

    package var description: String { "fault \(self.status.map { "\($0)" } ?? "?")" }
}

// MARK: - Connecting and resolving

package enum RPCClient {
    /// Connects to `target` on `loop`; the completion runs on `loop`. Must be called on `loop`.
    package static func connect(
        to target: PeerAddress,
        on loop: any EventLoop,
        completion: @escaping (Result<RPCClientConnection, any Error>) -> Void
    ) {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(PDUFramer(limits: PeerLimits.wire)),
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
                        completion(
                            .success(try channel.pipeline.syncOperations.handler(type: RPCClientConnection.self))
                        )
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
    package static func connectAndBind(
        to target: PeerAddress,
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
    package static func mapRequestStub() -> ByteBuffer {
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
    package static func resolve(
        epm: PeerAddress,
        fragment: Int,
        on loop: any EventLoop,
        completion: @escaping (Result<PeerAddress, any Error>) -> Void
    ) {
        Self.connectAndBind(to: epm, interface: .endpointMapper, fragment: fragment, on: loop) { result in
            switch result {
            case .failure(let error):
                completion(.failure(error))
            case .success(let connection):
                connection.call(
                    opnum: EPMOperation.map.rawValue,
                    stub: Self.mapRequestStub(),
                    verifier: false,
                    collect: true
                ) {
                    called in
                    connection.close()
                    do {
                        var stub = ByteBuffer()
                        for var part in try called.get().stub { stub.writeBuffer(&part) }
                        let response = try stub.readEPMMapResponse(
                            syntax: .ndr32,
                            endianness: .little,
                            limits: PeerLimits.wire
                        )
                        guard response.status.rawValue == 0, let tower = response.towers.compactMap({ $0 }).first,
                            tower.isNCACNIPTCP, let port = tower.tcpPort, port != 0
                        else {
                            throw PeerError("ept_map: no usable tower (status \(response.status))")
                        }
                        completion(.success(PeerAddress(host: epm.host, port: Int(port))))
                    } catch {
                        completion(.failure(error))
                    }
                }
            }
        }
    }
}
