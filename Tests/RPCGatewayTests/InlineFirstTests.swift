import Testing

@testable import RPCGateway

/// The inline-first containers against `Set` and `Dictionary` as models, over seeded random
/// operation sequences that cross the inline/spill-over boundary both ways.
@Suite struct InlineFirstTests {
    /// A small deterministic generator (xorshift), so a failure names its seed.
    struct Generator {
        var state: UInt64
        mutating func next(below bound: UInt32) -> UInt32 {
            self.state ^= self.state << 13
            self.state ^= self.state >> 7
            self.state ^= self.state << 17
            return UInt32(truncatingIfNeeded: self.state % UInt64(bound))
        }
    }

    @Test(arguments: [1, 2, 3, 42, 1234] as [UInt64])
    func setBehavesLikeSet(seed: UInt64) {
        var generator = Generator(state: seed)
        var set = InlineFirstSet<UInt32>()
        var model: Set<UInt32> = []
        for step in 0..<2_000 {
            let element = generator.next(below: 6)
            if generator.next(below: 2) == 0 {
                #expect(set.insert(element) == model.insert(element).inserted, "seed \(seed) step \(step)")
            } else {
                set.remove(element)
                model.remove(element)
            }
            #expect(set.count == model.count, "seed \(seed) step \(step)")
            #expect(set.isEmpty == model.isEmpty)
            #expect(Set(set.elements) == model)
            for probe: UInt32 in 0..<6 { #expect(set.contains(probe) == model.contains(probe)) }
        }
    }

    @Test func setsWithTheSameElementsAreEqualWhateverTheirOrder() {
        var a = InlineFirstSet<UInt32>()
        var b = InlineFirstSet<UInt32>()
        a.insert(1)
        a.insert(2)
        b.insert(2)
        b.insert(1)
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        b.remove(1)
        #expect(a != b)
    }

    @Test(arguments: [7, 99, 2024] as [UInt64])
    func dictionaryBehavesLikeDictionary(seed: UInt64) {
        var generator = Generator(state: seed)
        var dictionary = InlineFirstDictionary<UInt16, UInt32>()
        var model: [UInt16: UInt32] = [:]
        for step in 0..<500 {
            let key = UInt16(generator.next(below: 5))
            let value = generator.next(below: 1_000)
            dictionary.set(value, for: key)
            model[key] = value
            #expect(dictionary.count == model.count, "seed \(seed) step \(step)")
            for probe: UInt16 in 0..<5 { #expect(dictionary[probe] == model[probe]) }
            #expect(dictionary.sortedByKey().map(\.key) == model.keys.sorted())
            #expect(dictionary.sortedByKey().map(\.value) == model.keys.sorted().compactMap { model[$0] })
        }
        var other = InlineFirstDictionary<UInt16, UInt32>()
        for key in model.keys.sorted().reversed() { other.set(model[key] ?? 0, for: key) }
        #expect(other == dictionary)
        #expect(other.hashValue == dictionary.hashValue)
    }
}
