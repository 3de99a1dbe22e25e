import RPCGateway
import Testing

@Suite("Peer allow list")
struct PeerAllowListTests {
    let list = PeerAllowList(["edge1.example.test", "spiffe://example.test/edge1"])

    @Test func dnsNamesMatchCaseInsensitivelyAndIgnoreATrailingDot() {
        #expect(self.list.match([.dns("edge1.example.test")]) == "edge1.example.test")
        #expect(self.list.match([.dns("EDGE1.Example.TEST.")]) == "edge1.example.test")
        #expect(self.list.match([.dns("edge9.example.test")]) == nil)
        #expect(self.list.match([.dns("example.test")]) == nil)
        #expect(self.list.match([.dns("edge1.example.test.evil")]) == nil)
    }

    @Test func urisMatchExactly() {
        #expect(self.list.match([.uri("spiffe://example.test/edge1")]) == "spiffe://example.test/edge1")
        #expect(self.list.match([.uri("spiffe://example.test/Edge1")]) == nil)
        #expect(self.list.match([.uri("spiffe://example.test/edge1/x")]) == nil)
    }

    @Test func kindsDoNotCross() {
        // A DNS SAN spelled like the URI entry, or a URI SAN equal to the DNS entry, is no match.
        #expect(self.list.match([.dns("spiffe://example.test/edge1")]) == nil)
        #expect(self.list.match([.uri("edge1.example.test")]) == nil)
    }

    @Test func wildcardsAreLiteral() {
        #expect(self.list.match([.dns("*.example.test")]) == nil)
        #expect(PeerAllowList(["*.example.test"]).match([.dns("edge1.example.test")]) == nil)
    }

    @Test func anyNameOfSeveral() {
        #expect(
            self.list.match([.dns("other.test"), .uri("spiffe://example.test/edge1")]) == "spiffe://example.test/edge1"
        )
        #expect(self.list.match([]) == nil)
    }
}
