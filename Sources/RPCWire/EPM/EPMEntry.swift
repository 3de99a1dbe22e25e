/// One `ept_entry_t`: object UUID, tower pointer and annotation.
public struct EPMEntry: Hashable, Sendable {
    public var object: DCEUUID
    public var tower: ProtocolTower?
    /// The annotation characters as sent (a varying char array, NUL included).
    public var annotation: [UInt8]
    /// Referent of the tower pointer; `0` is generated when writing.
    public var towerReferent: UInt64

    public init(object: DCEUUID, tower: ProtocolTower?, annotation: [UInt8], towerReferent: UInt64 = 0) {
        self.object = object
        self.tower = tower
        self.annotation = annotation
        self.towerReferent = towerReferent
    }

    /// The annotation as text, trailing NULs removed.
    public var annotationText: String {
        var bytes = self.annotation
        while bytes.last == 0 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}
