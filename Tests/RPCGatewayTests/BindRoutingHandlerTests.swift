import NIOCore
import NIOEmbedded
import RPCWire
import Testing

@testable import RPCGateway

/// Collects what reaches the end of the pipeline after the routing handler is removed.
private final class Sink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var bytes = ByteBuffer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var piece = Self.unwrapInboundIn(data)
        self.bytes.writeBuffer(&piece)
    }

    /// The PDUs passed on (the handler passes bytes on unframed).
    var received: [RawPDU] {
        var bytes = self.bytes
        var pdus: [RawPDU] = []
        while let pdu = try? bytes.readRawPDU(limits: WireLimits()) { pdus.append(pdu) }
        return pdus
    }
}

@Suite("Bind routing handler (EmbeddedChannel)")
struct BindRoutingHandlerTests {
    @Test("The first PDU is handed over; later ones are held and passed on when the handler goes")
    func holdsThenReleases() throws {
        var first: [RawPDU] = []
        var closedEarly = 0
        let handler = BindRoutingHandler(
            limits: WireLimits(),
            onFirstPDU: { pdu, _ in first.append(pdu) },
            onClosedBeforeHandover: { closedEarly += 1 }
        )
        let sink = Sink()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([handler, sink])
        try channel.writeInbound(Wire.bind([Wire.samr], callID: 1).bytes)
        try channel.writeInbound(Wire.request(callID: 2, opnum: 0).bytes)
        #expect(first.map(\.header.callID) == [1])
        #expect(sink.received.isEmpty)
        handler.handOver()
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        #expect(sink.received.map(\.header.callID) == [2])
        _ = try channel.finish()
        #expect(closedEarly == 0, "a handed-over connection is released by the connection, not the handler")
    }

    @Test("After a local refusal the next bind is routed afresh")
    func nextBindAfterRefusal() throws {
        var seen: [UInt32] = []
        var handlerRef: BindRoutingHandler?
        let handler = BindRoutingHandler(
            limits: WireLimits(),
            onFirstPDU: { pdu, handler in
                seen.append(pdu.header.callID)
                handlerRef = handler
            },
            onClosedBeforeHandover: {}
        )
        let channel = EmbeddedChannel(handler: handler)
        try channel.writeInbound(Wire.bind([Wire.drsuapi], callID: 1).bytes)
        try channel.writeInbound(Wire.bind([Wire.samr], callID: 2).bytes)
        #expect(seen == [1])
        handlerRef?.awaitNextBind()
        #expect(seen == [1, 2], "the held bind is routed once the first was answered")
        _ = try? channel.finish()
    }

    @Test("A client that goes away before routing is released once")
    func releasedOnce() throws {
        var closedEarly = 0
        let handler = BindRoutingHandler(limits: WireLimits(), onFirstPDU: { _, _ in }, onClosedBeforeHandover: { closedEarly += 1 })
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.close().wait()
        #expect(closedEarly == 1)
    }

    @Test("A client that half-closes while waiting for its bind is closed and released at once")
    func halfCloseWhileWaiting() throws {
        var closedEarly = 0
        let handler = BindRoutingHandler(limits: WireLimits(), onFirstPDU: { _, _ in }, onClosedBeforeHandover: { closedEarly += 1 })
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(handler.isWaiting)
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!channel.isActive, "nothing is left to route once the client has finished sending")
        #expect(closedEarly == 1)
    }

    @Test("A half-close while a bind is being routed reaches the splice after the handover")
    func halfCloseWhileRouting() throws {
        final class Events: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            var inputClosed = 0
            func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
                if let event = event as? ChannelEvent, case .inputClosed = event { self.inputClosed += 1 }
            }
        }
        let handler = BindRoutingHandler(limits: WireLimits(), onFirstPDU: { _, _ in }, onClosedBeforeHandover: {})
        let events = Events()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([handler, events])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(Wire.bind([Wire.samr], callID: 1).bytes)
        #expect(!handler.isWaiting)
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(channel.isActive, "the bind is still being routed: its answer must reach the client")
        #expect(events.inputClosed == 0)
        handler.handOver()
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        #expect(events.inputClosed == 1)
        _ = try? channel.finish()
    }

    @Test("Holding is bounded")
    func bounded() throws {
        let handler = BindRoutingHandler(limits: WireLimits(), onFirstPDU: { _, _ in }, onClosedBeforeHandover: {})
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let request = Wire.request(callID: 1, opnum: 0).bytes
        let limit = BindRoutingHandler.maximumHeldFragments * WireLimits().maximumFragmentLength
        for _ in 0...(limit / request.readableBytes + 1) where channel.isActive {
            _ = try? channel.writeInbound(request)
        }
        #expect(!channel.isActive)
    }
}
