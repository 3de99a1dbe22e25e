package import NIOCore
import NIOPosix
package import RPCWire

/// A failure of ``EndpointMapperClient``.
package struct EndpointMapperClientError: Error, CustomStringConvertible {
    package var description: String

    package init(_ description: String) {
        self.description = description
    }
}

/// Lists every endpoint a server's endpoint mapper has registered, with the codecs the gateway uses.
///
/// One TCP connection: an anonymous `bind` to the endpoint mapper (v3.0, NDR 2.0), then `ept_lookup`
/// with inquiry `rpc_c_ep_all_elts`, paging with the returned entry handle until the status is not
/// zero (Samba answers the page after the last with `ept_s_not_registered`) or the handle is null.
/// Responses of several fragments are reassembled (``FragmentAssembler``). The whole exchange is
/// bounded by ``Configuration/timeout`` and ``Configuration/maximumPages``.
package struct EndpointMapperClient: Sendable {
    package struct Configuration: Sendable, Hashable {
        /// For connecting and the whole exchange.
        package var timeout: Duration
        /// `max_ents` of each `ept_lookup`.
        package var entriesPerPage: UInt32
        /// Most `ept_lookup` calls; the listing is marked truncated when the server has more.
        package var maximumPages: Int
        /// Fragment sizes offered in the bind.
        package var maximumFragment: UInt16
        package var limits: WireLimits

        package init(
            timeout: Duration = .seconds(10),
            entriesPerPage: UInt32 = 500,
            maximumPages: Int = 20,
            maximumFragment: UInt16 = 5840,
            limits: WireLimits = WireLimits()
        ) {
            self.timeout = timeout
            self.entriesPerPage = entriesPerPage
            self.maximumPages = maximumPages
            self.maximumFragment = maximumFragment
            self.limits = limits
        }
    }

    /// Everything one enumeration returned.
    package struct Listing: Hashable, Sendable {
        /// Every entry of every page, in the server's order.
        package var entries: [EPMEntry]
        /// `ept_lookup` calls made.
        package var pages: Int
        /// The status of the last page: `0`, or `ept_s_not_registered` at the end of the list.
        package var finalStatus: RPCStatus
        /// The server still had entries after ``Configuration/maximumPages`` pages.
        package var truncated: Bool

        package init(entries: [EPMEntry], pages: Int, finalStatus: RPCStatus, truncated: Bool) {
            self.entries = entries
            self.pages = pages
            self.finalStatus = finalStatus
            self.truncated = truncated
        }
    }

    /// `rpc_c_ep_all_elts`: every element, whatever its interface or object.
    static let inquireAllElements: UInt32 = 0
    /// `rpc_c_vers_all`.
    static let allVersions: UInt32 = 1

    package let configuration: Configuration

    package init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Connects to `host:port` and lists its endpoints.
    ///
    /// - Throws: ``EndpointMapperClientError`` when connecting fails, for a refused bind, a fault,
    ///   a timeout or a closed connection; ``RPCWireError`` for malformed PDUs or NDR.
    package func lookUpAll(host: String, port: Int, group: any EventLoopGroup) async throws -> Listing {
        try await self.withSession(host: host, port: port, group: group) { session in
            try await session.run()
        }
    }

    /// Connects to `host:port` and asks `ept_map` (NDR 2.0) for the ncacn_ip_tcp endpoint of
    /// `interface`: the server's TCP port, or `nil` when the interface is not registered (or the
    /// answer names no TCP endpoint).
    ///
    /// - Throws: as ``lookUpAll(host:port:group:)``.
    package func map(_ interface: SyntaxID, host: String, port: Int, group: any EventLoopGroup) async throws -> UInt16?
    {
        try await self.withSession(host: host, port: port, group: group) { session in
            try await session.bind()
            return try await session.map(interface)
        }
    }

    private func withSession<Result: Sendable>(
        host: String,
        port: Int,
        group: any EventLoopGroup,
        _ body: @escaping @Sendable (inout Session) async throws -> Result
    ) async throws -> Result {
        let configuration = self.configuration
        let channel: NIOAsyncChannel<RawPDU, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(configuration.timeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(PDUFramer(limits: configuration.limits))
                        )
                        return try NIOAsyncChannel<RawPDU, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch let error as NIOConnectionError {
            let cause = error.connectionErrors.last.map { "\($0.error)" } ?? "\(error)"
            throw EndpointMapperClientError("cannot connect: \(cause)")
        } catch {
            throw EndpointMapperClientError("cannot connect: \(error)")
        }
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                try await channel.executeThenClose { inbound, outbound in
                    var session = Session(
                        inbound: inbound.makeAsyncIterator(),
                        outbound: outbound,
                        configuration: configuration
                    )
                    return try await body(&session)
                }
            }
            group.addTask {
                try await Task.sleep(for: configuration.timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let result = first else {
                channel.channel.close(promise: nil)
                throw EndpointMapperClientError(
                    "no complete answer from \(host):\(port) within \(configuration.timeout)"
                )
            }
            return result
        }
    }

    /// The conversation on one connection.
    private struct Session {
        var inbound: NIOAsyncChannelInboundStream<RawPDU>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        let configuration: Configuration
        var callID: UInt32 = 0

        init(
            inbound: NIOAsyncChannelInboundStream<RawPDU>.AsyncIterator,
            outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
            configuration: Configuration
        ) {
            self.inbound = inbound
            self.outbound = outbound
            self.configuration = configuration
        }

        mutating func run() async throws -> Listing {
            try await self.bind()
            var entries: [EPMEntry] = []
            var handle = EPMContextHandle.null
            var pages = 0
            while pages < self.configuration.maximumPages {
                pages += 1
                let response = try await self.lookUp(from: handle)
                entries += response.entries
                if response.status.rawValue != 0 || response.entryHandle == .null {
                    return Listing(entries: entries, pages: pages, finalStatus: response.status, truncated: false)
                }
                handle = response.entryHandle
            }
            return Listing(entries: entries, pages: pages, finalStatus: RPCStatus(rawValue: 0), truncated: true)
        }

        private mutating func nextCallID() -> UInt32 {
            self.callID += 1
            return self.callID
        }

        private mutating func receive() async throws -> RawPDU {
            guard let pdu = try await self.inbound.next() else {
                throw EndpointMapperClientError("the endpoint mapper closed the connection")
            }
            return pdu
        }

        mutating func bind() async throws {
            let callID = self.nextCallID()
            let bind = PDU(
                header: PDUHeader(packetType: .bind, callID: callID),
                body: .bind(
                    BindPDU(
                        maxTransmitFragment: self.configuration.maximumFragment,
                        maxReceiveFragment: self.configuration.maximumFragment,
                        associationGroupID: 0,
                        contexts: [
                            PresentationContext(contextID: 0, abstractSyntax: .endpointMapper, transferSyntaxes: [.ndr])
                        ]
                    )
                )
            )
            try await self.outbound.write(try bind.serialized())
            let answer = try await self.receive()
            guard answer.header.callID == callID else {
                throw EndpointMapperClientError(
                    "bind answered with call_id \(answer.header.callID), expected \(callID)"
                )
            }
            switch try answer.parse(limits: self.configuration.limits).body {
            case .bindAck(let ack):
                guard let result = ack.results.first, result.result == .acceptance else {
                    let reason =
                        ack.results.first.map { "result \($0.result.rawValue), reason \($0.reason.rawValue)" }
                        ?? "no result"
                    throw EndpointMapperClientError("the endpoint mapper refused the bind (\(reason))")
                }
                guard result.transferSyntax == .ndr else {
                    throw EndpointMapperClientError(
                        "the endpoint mapper accepted transfer syntax \(result.transferSyntax), not NDR 2.0"
                    )
                }
            case .bindNak(let nak):
                throw EndpointMapperClientError(
                    "the endpoint mapper refused the bind (bind_nak reason \(nak.rejectReason.rawValue))"
                )
            case .fault(let fault):
                throw EndpointMapperClientError("the bind was answered with fault \(fault.status)")
            default:
                throw EndpointMapperClientError("the bind was answered with \(answer.header.packetType)")
            }
        }

        /// One `ept_map` call for `interface` over NDR 2.0; the TCP port of the first ncacn_ip_tcp
        /// tower of the answer.
        mutating func map(_ interface: SyntaxID) async throws -> UInt16? {
            var stub = ByteBuffer()
            let tower = ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: 0))
            stub.writeEPMMapRequest(EPMMapRequest(object: nil, tower: tower, maxTowers: 4), syntax: .ndr32)
            var (replyStub, endianness) = try await self.call(.map, stub: stub)
            let response = try replyStub.readEPMMapResponse(
                syntax: .ndr32,
                endianness: endianness,
                limits: self.configuration.limits
            )
            guard response.status.rawValue == 0 else { return nil }
            return response.towers.lazy.compactMap { $0 }.first(where: \.isNCACNIPTCP)?.tcpPort
        }

        /// One `ept_lookup` call and its (possibly fragmented) answer.
        private mutating func lookUp(from handle: EPMContextHandle) async throws -> EPMLookupResponse {
            var stub = ByteBuffer()
            stub.writeEPMLookupRequest(
                EPMLookupRequest(
                    inquiryType: EndpointMapperClient.inquireAllElements,
                    object: nil,
                    interface: nil,
                    versionOption: EndpointMapperClient.allVersions,
                    entryHandle: handle,
                    maxEntries: self.configuration.entriesPerPage
                ),
                syntax: .ndr32
            )
            var (replyStub, endianness) = try await self.call(.lookup, stub: stub)
            return try replyStub.readEPMLookupResponse(
                syntax: .ndr32,
                endianness: endianness,
                limits: self.configuration.limits
            )
        }

        /// Sends one request of `operation` with `stub` and returns the reply's stub, reassembled
        /// from its fragments (bounded by the wire limits' reassembly caps), with the byte order
        /// of its first fragment. A fault or any other answer is an error.
        private mutating func call(_ operation: EPMOperation, stub: ByteBuffer) async throws -> (ByteBuffer, Endianness)
        {
            let callID = self.nextCallID()
            let request = PDU(
                header: PDUHeader(packetType: .request, callID: callID),
                body: .request(
                    RequestPDU(
                        allocationHint: UInt32(stub.readableBytes),
                        contextID: 0,
                        opnum: operation.rawValue,
                        stub: stub
                    )
                )
            )
            try await self.outbound.write(try request.serialized())
            let name = operation == .map ? "ept_map" : "ept_lookup"
            var assembler = FragmentAssembler(limits: self.configuration.limits)
            var fragments: [RawPDU]?
            while fragments == nil {
                let pdu = try await self.receive()
                guard pdu.header.callID == callID else {
                    throw EndpointMapperClientError(
                        "\(name) answered with call_id \(pdu.header.callID), expected \(callID)"
                    )
                }
                fragments = try assembler.append(pdu)
            }
            var replyStub = ByteBuffer()
            var endianness = Endianness.little
            for (index, fragment) in (fragments ?? []).enumerated() {
                if index == 0 { endianness = fragment.header.endianness }
                switch try fragment.parse(limits: self.configuration.limits).body {
                case .response(var response):
                    replyStub.writeBuffer(&response.stub)
                case .fault(let fault):
                    throw EndpointMapperClientError("\(name) failed with fault \(fault.status)")
                default:
                    throw EndpointMapperClientError("\(name) answered with \(fragment.header.packetType)")
                }
            }
            return (replyStub, endianness)
        }
    }
}
