import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// An in-process endpoint mapper on 127.0.0.1: answers the bind, then each `ept_lookup` with the
/// next page (split over two response fragments), then `ept_s_not_registered` as Samba does.
final class FakeEndpointMapper: Sendable {
    enum Behaviour: Sendable {
        case pages([[EPMEntry]])
        /// Every page carries the entries and status 0 but a null handle.
        case nullHandle([EPMEntry])
        /// Accepts the connection and never answers.
        case silent
        case rejectBind
        case faultLookup(RPCStatus)
    }

    let behaviour: Behaviour
    /// The `ept_lookup` requests received, in order.
    let requests = NIOLockedValueBox<[EPMLookupRequest]>([])
    private let channel: any Channel

    init(_ behaviour: Behaviour) async throws {
        self.behaviour = behaviour
        let requests = self.requests
        self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(PDUFramer()),
                        Handler(behaviour: behaviour, requests: requests),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    var port: Int { self.channel.localAddress?.port ?? 0 }

    func close() async {
        try? await self.channel.close()
    }

    /// The handle the server returns after page `index` (0-based).
    static func handle(afterPage index: Int) -> EPMContextHandle {
        EPMContextHandle(attributes: 0, uuid: DCEUUID(high: 0xfeed_0000_0000_0000, low: UInt64(index + 1)))
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = RawPDU
        typealias OutboundOut = ByteBuffer

        let behaviour: Behaviour
        let requests: NIOLockedValueBox<[EPMLookupRequest]>
        var lookups = 0

        init(behaviour: Behaviour, requests: NIOLockedValueBox<[EPMLookupRequest]>) {
            self.behaviour = behaviour
            self.requests = requests
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let raw = Self.unwrapInboundIn(data)
            if case .silent = self.behaviour { return }
            guard let pdu = try? raw.parse() else {
                context.close(promise: nil)
                return
            }
            switch pdu.body {
            case .bind:
                let accepted = PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr)
                let rejected = PresentationResult(
                    result: .providerRejection,
                    reason: .abstractSyntaxNotSupported,
                    transferSyntax: PresentationResult.nullSyntax
                )
                var rejectBind = false
                if case .rejectBind = self.behaviour { rejectBind = true }
                let ack = BindAckPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 0x1234,
                    secondaryAddress: BindAckPDU.secondaryAddress(port: 135),
                    results: [rejectBind ? rejected : accepted]
                )
                self.send(
                    PDU(header: PDUHeader(packetType: .bindAck, callID: raw.header.callID), body: .bindAck(ack)),
                    context: context
                )
            case .request(var request):
                guard request.opnum == EPMOperation.lookup.rawValue,
                    let lookup = try? request.stub.readEPMLookupRequest(syntax: .ndr32)
                else {
                    context.close(promise: nil)
                    return
                }
                self.requests.withLockedValue { $0.append(lookup) }
                self.answer(lookup, callID: raw.header.callID, context: context)
            default:
                context.close(promise: nil)
            }
        }

        private func answer(_ lookup: EPMLookupRequest, callID: UInt32, context: ChannelHandlerContext) {
            let page = self.lookups
            self.lookups += 1
            let response: EPMLookupResponse
            switch self.behaviour {
            case .pages(let pages):
                if page < pages.count {
                    response = EPMLookupResponse(
                        entryHandle: FakeEndpointMapper.handle(afterPage: page),
                        maxEntries: lookup.maxEntries,
                        entries: pages[page],
                        status: RPCStatus(rawValue: 0)
                    )
                } else {
                    response = EPMLookupResponse(
                        entryHandle: .null,
                        maxEntries: lookup.maxEntries,
                        entries: [],
                        status: .endpointNotRegistered
                    )
                }
            case .nullHandle(let entries):
                response = EPMLookupResponse(
                    entryHandle: .null,
                    maxEntries: lookup.maxEntries,
                    entries: entries,
                    status: RPCStatus(rawValue: 0)
                )
            case .faultLookup(let status):
                self.send(
                    PDU(
                        header: PDUHeader(packetType: .fault, callID: callID),
                        body: .fault(FaultPDU(contextID: 0, status: status))
                    ),
                    context: context
                )
                return
            case .silent, .rejectBind:
                return
            }
            var stub = ByteBuffer()
            stub.writeEPMLookupResponse(response, syntax: .ndr32)
            // Two fragments, split in the middle of the stub (wherever that falls in the NDR).
            let total = UInt32(stub.readableBytes)
            let first = stub.readSlice(length: stub.readableBytes / 2) ?? ByteBuffer()
            for (part, flags) in [(first, PFCFlags.firstFragment), (stub, PFCFlags.lastFragment)] {
                self.send(
                    PDU(
                        header: PDUHeader(packetType: .response, flags: flags, callID: callID),
                        body: .response(ResponsePDU(allocationHint: total, contextID: 0, stub: part))
                    ),
                    context: context
                )
            }
        }

        private func send(_ pdu: PDU, context: ChannelHandlerContext) {
            guard let bytes = try? pdu.serialized() else { return }
            context.writeAndFlush(Self.wrapOutboundOut(bytes), promise: nil)
        }
    }
}

@Suite("Endpoint-mapper client (against an in-process server)")
struct EndpointMapperClientTests {
    static let samr = InterfaceCatalog.named("samr")!.syntax
    static let lsarpc = InterfaceCatalog.named("lsarpc")!.syntax

    static func entry(_ interface: SyntaxID, port: UInt16, annotation: String) -> EPMEntry {
        EPMEntry(
            object: .zero,
            tower: ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: port)),
            annotation: Array(annotation.utf8) + [0]
        )
    }

    static let page1 = (0..<40).map {
        entry($0 % 2 == 0 ? samr : lsarpc, port: 49152 + UInt16($0), annotation: "page one \($0)")
    }
    static let page2 = [
        entry(.endpointMapper, port: 135, annotation: "epmapper"), entry(samr, port: 49999, annotation: ""),
    ]

    static func client(timeout: Duration = .seconds(10), maximumPages: Int = 20) -> EndpointMapperClient {
        EndpointMapperClient(
            configuration: EndpointMapperClient.Configuration(timeout: timeout, maximumPages: maximumPages)
        )
    }

    @Test("Pages with the returned handle until ept_s_not_registered; fragmented replies are reassembled")
    func paging() async throws {
        let server = try await FakeEndpointMapper(.pages([Self.page1, Self.page2]))
        defer { Task { await server.close() } }
        let listing = try await Self.client().lookUpAll(
            host: "127.0.0.1",
            port: server.port,
            group: MultiThreadedEventLoopGroup.singleton
        )

        #expect(listing.pages == 3)
        #expect(listing.finalStatus == .endpointNotRegistered)
        #expect(!listing.truncated)
        let expected = Self.page1 + Self.page2
        #expect(listing.entries.count == expected.count)
        #expect(listing.entries.map(\.tower) == expected.map(\.tower))
        #expect(listing.entries.map(\.annotationText) == expected.map(\.annotationText))
        #expect(listing.entries[40].tower?.tcpPort == 135)

        let requests = server.requests.withLockedValue { $0 }
        #expect(
            requests.map(\.entryHandle) == [
                .null, FakeEndpointMapper.handle(afterPage: 0), FakeEndpointMapper.handle(afterPage: 1),
            ]
        )
        for request in requests {
            #expect(request.inquiryType == 0)
            #expect(request.object == nil)
            #expect(request.interface == nil)
            #expect(request.versionOption == 1)
            #expect(request.maxEntries == 500)
        }
    }

    @Test("A null handle with status 0 ends the listing")
    func nullHandle() async throws {
        let server = try await FakeEndpointMapper(.nullHandle(Self.page2))
        defer { Task { await server.close() } }
        let listing = try await Self.client().lookUpAll(
            host: "127.0.0.1",
            port: server.port,
            group: MultiThreadedEventLoopGroup.singleton
        )
        #expect(listing.pages == 1)
        #expect(listing.finalStatus.rawValue == 0)
        #expect(listing.entries.count == 2)
    }

    @Test("Paging is bounded: the listing says it was truncated")
    func truncated() async throws {
        let server = try await FakeEndpointMapper(.pages(Array(repeating: Self.page2, count: 5)))
        defer { Task { await server.close() } }
        let listing = try await Self.client(maximumPages: 2).lookUpAll(
            host: "127.0.0.1",
            port: server.port,
            group: MultiThreadedEventLoopGroup.singleton
        )
        #expect(listing.pages == 2)
        #expect(listing.truncated)
        #expect(listing.entries.count == 4)
        #expect(server.requests.withLockedValue { $0.count } == 2)
    }

    @Test("A server that never answers times out")
    func timeout() async throws {
        let server = try await FakeEndpointMapper(.silent)
        defer { Task { await server.close() } }
        let started = ContinuousClock.now
        await #expect(throws: EndpointMapperClientError.self) {
            try await Self.client(timeout: .milliseconds(300)).lookUpAll(
                host: "127.0.0.1",
                port: server.port,
                group: MultiThreadedEventLoopGroup.singleton
            )
        }
        // Only catches a hang: the error above is the timeout's. (A 5-s bound failed on a
        // machine loaded by parallel builds, 13 s: wall-clock bounds do not belong in unit tests.)
        #expect(ContinuousClock.now - started < .seconds(60))
    }

    @Test("A refused connection is an error that says so")
    func connectionRefused() async throws {
        // Bind a port, then close it: nothing listens there any more.
        let server = try await FakeEndpointMapper(.silent)
        let port = server.port
        await server.close()
        do {
            _ = try await Self.client().lookUpAll(
                host: "127.0.0.1",
                port: port,
                group: MultiThreadedEventLoopGroup.singleton
            )
            Issue.record("expected the connection to be refused")
        } catch let error as EndpointMapperClientError {
            #expect(error.description.hasPrefix("cannot connect: "))
        }
    }

    @Test("A refused bind and a faulted lookup are errors that say so")
    func refusals() async throws {
        let rejecting = try await FakeEndpointMapper(.rejectBind)
        defer { Task { await rejecting.close() } }
        do {
            _ = try await Self.client().lookUpAll(
                host: "127.0.0.1",
                port: rejecting.port,
                group: MultiThreadedEventLoopGroup.singleton
            )
            Issue.record("expected the refused bind to throw")
        } catch let error as EndpointMapperClientError {
            #expect(error.description.contains("refused the bind"))
        }

        let faulting = try await FakeEndpointMapper(.faultLookup(.operationRangeError))
        defer { Task { await faulting.close() } }
        do {
            _ = try await Self.client().lookUpAll(
                host: "127.0.0.1",
                port: faulting.port,
                group: MultiThreadedEventLoopGroup.singleton
            )
            Issue.record("expected the fault to throw")
        } catch let error as EndpointMapperClientError {
            #expect(error.description.contains("fault 0x1c010002"))
        }
    }
}
