package import NIOCore
package import RPCWire

/// The interface the bench server registers and the bench client calls.
package enum BenchInterface {
    /// `a0b1c2d3-0000-4000-8000-00000000beef` v1.0: not in any catalog, so a gateway policy must
    /// name it explicitly.
    package static let syntax = SyntaxID(
        uuid: DCEUUID(high: 0xa0b1_c2d3_0000_4000, low: 0x8000_0000_0000_beef),
        majorVersion: 1,
        minorVersion: 0
    )

    /// Opnum 0: the response stub is the request stub.
    package static let echo: UInt16 = 0
    /// Opnum 1: the request stub is consumed; the response stub is 4 bytes (the byte count, u32 LE).
    package static let sink: UInt16 = 1
}

/// Framing limits for the bench peers: any `frag_length`, big reassembled calls.
package enum PeerLimits {
    package static let wire = WireLimits(
        maximumFragmentLength: Int(UInt16.max),
        maximumReassembledStubLength: 64 * 1024 * 1024,
        maximumFragmentsPerCall: 1 << 20
    )
    /// Smallest fragment size the peers accept (C706 12.6.3.1 "must receive" size).
    package static let minimumFragment = WireLimits.minimumNegotiatedFragmentSize
}

/// The shape of an NTLM verifier at `connect` level: 8-byte `sec_trailer` plus a 16-byte value
/// (an NTLMSSP signature is 16 bytes). Nothing is signed; only the trailer's shape matters here.
package enum FakeVerifier {
    package static let valueLength = 16
    package static let trailerLength = WireLimits.securityTrailerLength + valueLength
    /// Stub plus padding is a multiple of this, so the trailer is 16-aligned as Samba pads it.
    package static let alignment = 16
    package static let contextID: UInt32 = 0x0007_9231

    /// Padding, `sec_trailer` and value for a fragment whose stub is `stubLength` bytes.
    package static func write(stubLength: Int, into buffer: inout ByteBuffer) {
        let pad = (alignment - stubLength % alignment) % alignment
        buffer.writeRepeatingByte(0, count: pad)
        buffer.writeMultipleIntegers(
            AuthType.ntlm.rawValue,
            AuthLevel.connect.rawValue,
            UInt8(pad),
            UInt8(0)
        )
        buffer.writeInteger(Self.contextID, endianness: .little)
        buffer.writeRepeatingByte(0x5A, count: Self.valueLength)
    }

    package static func padding(forStubLength stubLength: Int) -> Int {
        (alignment - stubLength % alignment) % alignment
    }
}

/// The stub of a call as a list of buffers (slices of received fragments, or one prepared buffer),
/// consumed front to back without copying.
package struct StubChain {
    private var parts: [ByteBuffer]
    private(set) var remaining: Int

    package init(_ parts: [ByteBuffer]) {
        self.parts = parts.filter { $0.readableBytes > 0 }.reversed()
        self.remaining = parts.reduce(0) { $0 + $1.readableBytes }
    }

    /// Up to `count` bytes as slices, in order.
    package mutating func take(_ count: Int, into output: inout [ByteBuffer]) {
        var wanted = min(count, self.remaining)
        self.remaining -= wanted
        while wanted > 0, var last = self.parts.popLast() {
            if last.readableBytes <= wanted {
                wanted -= last.readableBytes
                output.append(last)
            } else if let slice = last.readSlice(length: wanted) {
                output.append(slice)
                wanted = 0
                self.parts.append(last)
            }
        }
    }
}

/// Builds the fragments of one request or response call (C706 12.6.4.9/10): each fragment carries
/// at most `maxFragment` bytes, FIRST_FRAG on the first, LAST_FRAG on the last, `alloc_hint` the
/// stub bytes left. With `verifier`, every fragment carries a ``FakeVerifier`` trailer.
///
/// Each fragment is handed to `emit` as a header buffer, the stub slices and (with a verifier) the
/// trailer, so a channel writes them with one `writev` and the stub is never copied.
package enum CallFragmenter {
    package static let callHeaderLength = WireLimits.commonHeaderLength + 8

    /// Stub bytes that fit in one fragment.
    package static func stubCapacity(maxFragment: Int, verifier: Bool) -> Int {
        var capacity = maxFragment - Self.callHeaderLength
        if verifier {
            capacity -= FakeVerifier.trailerLength
            capacity -= capacity % FakeVerifier.alignment
        }
        return max(capacity, 8)
    }

    package enum Kind {
        case request(opnum: UInt16)
        case response
    }

    package static func fragments(
        _ kind: Kind,
        callID: UInt32,
        contextID: UInt16,
        stub: [ByteBuffer],
        maxFragment: Int,
        verifier: Bool,
        allocator: ByteBufferAllocator,
        emit: (ByteBuffer) -> Void
    ) {
        var chain = StubChain(stub)
        let capacity = Self.stubCapacity(maxFragment: maxFragment, verifier: verifier)
        var first = true
        var parts: [ByteBuffer] = []
        repeat {
            let hint = chain.remaining
            parts.removeAll(keepingCapacity: true)
            chain.take(capacity, into: &parts)
            let stubLength = parts.reduce(0) { $0 + $1.readableBytes }
            var flags: PFCFlags = []
            if first { flags.insert(.firstFragment) }
            if chain.remaining == 0 { flags.insert(.lastFragment) }
            let trailer = verifier ? FakeVerifier.padding(forStubLength: stubLength) + FakeVerifier.trailerLength : 0
            var header = allocator.buffer(capacity: Self.callHeaderLength)
            let packetType: PacketType
            switch kind {
            case .request: packetType = .request
            case .response: packetType = .response
            }
            header.writePDUHeader(
                PDUHeader(
                    packetType: packetType,
                    flags: flags,
                    dataRepresentation: .littleEndian,
                    fragmentLength: UInt16(truncatingIfNeeded: Self.callHeaderLength + stubLength + trailer),
                    authLength: verifier ? UInt16(FakeVerifier.valueLength) : 0,
                    callID: callID
                )
            )
            switch kind {
            case .request(let opnum):
                header.writeMultipleIntegers(UInt32(truncatingIfNeeded: hint), contextID, opnum, endianness: .little)
            case .response:
                header.writeMultipleIntegers(
                    UInt32(truncatingIfNeeded: hint),
                    contextID,
                    UInt8(0),
                    UInt8(0),
                    endianness: .little
                )
            }
            emit(header)
            for part in parts { emit(part) }
            if verifier {
                var tail = allocator.buffer(capacity: trailer)
                FakeVerifier.write(stubLength: stubLength, into: &tail)
                emit(tail)
            }
            first = false
        } while chain.remaining > 0
    }
}

extension RawPDU {
    /// The stub of a request or response fragment, as a slice (auth padding and verifier excluded).
    package func callStub() throws -> ByteBuffer {
        switch try self.parse(limits: PeerLimits.wire).body {
        case .request(let request): return request.stub
        case .response(let response): return response.stub
        default: throw PeerError("expected a request or response, got \(self.header.packetType)")
        }
    }
}

package struct PeerError: Error, CustomStringConvertible {
    package var description: String
    package init(_ description: String) { self.description = description }
}

/// `HOST:PORT` on the command line.
package struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    package var host: String
    package var port: Int

    package init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    package init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    package var description: String { "\(self.host):\(self.port)" }
}
