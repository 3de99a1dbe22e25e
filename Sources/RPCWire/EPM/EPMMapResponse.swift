public import NIOCore

/// The `[out]` parameters of `ept_map`.
///
/// NDR32 layout: entry handle, num_towers u32, conformant varying array of tower pointers
/// (max_count, offset, actual_count, referents), the deferred `twr_t`s, status. NDR64 widens
/// max_count, offset, actual_count and referents to u64 aligned to 8 (MS-RPCE 2.2.5).
public struct EPMMapResponse: Hashable, Sendable {
    public var entryHandle: EPMContextHandle
    /// The array's max_count: the request's max_towers (`size_is(max_towers)`), as Samba echoes it.
    public var maxTowers: UInt32
    /// The returned towers; `num_towers` and actual_count are both `towers.count`.
    public var towers: [ProtocolTower?]
    public var status: RPCStatus
    /// Referents of the tower pointers, parallel to ``towers``; a missing or zero entry is generated.
    public var towerReferents: [UInt64]
    /// Alignment padding as read, reused in order when writing; missing bytes are written as zero.
    public var padding: [UInt8]

    public init(
        entryHandle: EPMContextHandle = .null,
        maxTowers: UInt32,
        towers: [ProtocolTower?],
        status: RPCStatus,
        towerReferents: [UInt64] = [],
        padding: [UInt8] = []
    ) {
        self.entryHandle = entryHandle
        self.maxTowers = maxTowers
        self.towers = towers
        self.status = status
        self.towerReferents = towerReferents
        self.padding = padding
    }

    /// "No such endpoint": no towers and `ept_s_not_registered` (0x16c9a0d6), what a server answers
    /// for an interface it does not serve. The gateway answers refused lookups with it.
    public static func notRegistered(entryHandle: EPMContextHandle = .null, maxTowers: UInt32) -> EPMMapResponse {
        EPMMapResponse(entryHandle: entryHandle, maxTowers: maxTowers, towers: [], status: .endpointNotRegistered)
    }
}

extension EPMMapResponse {
    /// The whole `response` PDU answering an `ept_map` call with ``notRegistered(entryHandle:maxTowers:)``:
    /// what the gateway sends, without asking the server, for an interface the client may not look up.
    ///
    /// - Parameters:
    ///   - callID: the request's `call_id`.
    ///   - contextID: the request's `p_cont_id`.
    ///   - maxTowers: the request's `max_towers`, echoed as the tower array's max_count.
    ///   - syntax: the transfer syntax of the request's presentation context.
    ///   - dataRepresentation: the request's `drep`, so the reply is in the client's byte order.
    /// - Returns: the serialized PDU; `nil` only if it could not be serialized, which an empty reply
    ///   never fails.
    public static func notRegisteredPDU(
        callID: UInt32,
        contextID: UInt16,
        maxTowers: UInt32,
        syntax: NDRSyntax,
        dataRepresentation: DataRepresentation
    ) -> ByteBuffer? {
        var stub = ByteBuffer()
        stub.writeEPMMapResponse(
            .notRegistered(maxTowers: maxTowers),
            syntax: syntax,
            endianness: dataRepresentation.endianness
        )
        let response = PDU(
            header: PDUHeader(packetType: .response, dataRepresentation: dataRepresentation, callID: callID),
            body: .response(ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: contextID, stub: stub))
        )
        return try? response.serialized()
    }
}

// MARK: - NDR

extension EPMMapResponse {
    static func read(from reader: inout NDRReader) throws -> (EPMMapResponse, [LocatedTower]) {
        let handle = try reader.readContextHandle()
        let count = try reader.readUInt32("num_towers")
        let (maxCount, actual) = try reader.readConformantVaryingHeader("towers", count: count)
        guard actual * reader.syntax.wideSize <= reader.remaining else {
            throw RPCWireError(.invalidNDR, "\(actual) tower pointers run past the stub end")
        }
        var referents: [UInt64] = []
        referents.reserveCapacity(actual)
        for index in 0..<actual {
            referents.append(try reader.readReferent("tower pointer \(index)"))
        }
        var towers: [ProtocolTower?] = []
        towers.reserveCapacity(actual)
        var located: [LocatedTower] = []
        for referent in referents {
            if referent == 0 {
                towers.append(nil)
            } else {
                let (tower, offset) = try reader.readTwr()
                towers.append(tower)
                located.append(LocatedTower(tower: tower, offset: offset))
            }
        }
        let status = try reader.readUInt32("status")
        let response = EPMMapResponse(
            entryHandle: handle,
            maxTowers: maxCount,
            towers: towers,
            status: RPCStatus(rawValue: status),
            towerReferents: referents,
            padding: reader.padding
        )
        return (response, located)
    }

    func write(to buffer: inout ByteBuffer, syntax: NDRSyntax, endianness: Endianness) -> Int {
        var writer = NDRWriter(buffer: buffer, syntax: syntax, endianness: endianness, padding: self.padding)
        let start = buffer.writerIndex
        writer.writeContextHandle(self.entryHandle, in: &buffer)
        let count = UInt32(truncatingIfNeeded: self.towers.count)
        writer.writeUInt32(count, in: &buffer)
        writer.writeWide(UInt64(self.maxTowers), in: &buffer)
        writer.writeWide(0, in: &buffer)
        writer.writeWide(UInt64(count), in: &buffer)
        for (index, tower) in self.towers.enumerated() {
            let preferred = index < self.towerReferents.count ? self.towerReferents[index] : 0
            writer.writeReferent(isNull: tower == nil, preferred: preferred, in: &buffer)
        }
        for tower in self.towers {
            if let tower {
                writer.writeTwr(tower, in: &buffer)
            }
        }
        writer.writeUInt32(self.status.rawValue, in: &buffer)
        return buffer.writerIndex - start
    }
}

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Parses an `ept_map` response stub; `self` is exactly the stub.
    public mutating func readEPMMapResponse(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMMapResponse {
        try self.readWholeNDRStub("ept_map response", syntax: syntax, endianness: endianness, limits: limits) {
            try EPMMapResponse.read(from: &$0).0
        }
    }

    /// Writes an `ept_map` response stub.
    @discardableResult
    public mutating func writeEPMMapResponse(
        _ response: EPMMapResponse,
        syntax: NDRSyntax,
        endianness: Endianness = .little
    ) -> Int {
        response.write(to: &self, syntax: syntax, endianness: endianness)
    }
}
