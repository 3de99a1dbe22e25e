import NIOCore
import RPCWire

func fuzzEndpointMapper(input: ByteBuffer, fragments: [RawPDU], limits: WireLimits) {
}
