import GenKernels
import FoundationEssentials
import Glibc

/// Learns byte-level BPE merges from a corpus.
///
/// Unique chunks are counted once; then each merge updates pair counts only in the words that
/// hold the merged pair (their pairs are taken out and put back), and a max-heap with lazy
/// invalidation picks the next pair, so a merge costs in proportion to the words it touches.
/// Ties: among pairs of equal count the one with the smaller left id, then smaller right id,
/// merges first. Ids: 0–255 are the bytes, then one id per merge, then the special tokens.
public enum BPETrainer {
    /// Trains a tokenizer of exactly `vocabSize` ids (bytes + merges + specials).
    /// - Throws: `GenError` when the corpus has too few distinct pairs for that many merges.
    public static func train(paths: [String], vocabSize: Int, pattern: SplitPattern, special: [String] = [],
                             progress: ((Int, Int) -> Void)? = nil) throws -> BPETokenizer {
        let mergesWanted = vocabSize - 256 - special.count
        guard mergesWanted >= 0 else {
            throw GenError("--vocab-size \(vocabSize) is too small: 256 byte tokens\(special.isEmpty ? "" : " and \(special.count) special tokens") come first")
        }
        // 1. Unique chunks and their counts.
        let counter = ChunkCounter()
        for path in paths {
            let data = try Corpus.mapValidated(path)
            data.withUnsafeBytes { raw in
                let p = raw.bindMemory(to: UInt8.self).baseAddress!
                pattern.split(p, raw.count) { lo, hi in counter.add(p + lo, hi - lo) }
            }
        }
        var words: [[Int32]] = []
        var counts: [Int] = []
        counter.forEach { bytes, count in
            words.append(bytes.map { Int32($0) })
            counts.append(count)
        }
        // 2. Pair counts and where each pair occurs.
        var pairCount: [UInt64: Int] = [:]
        var pairWords: [UInt64: [Int32]] = [:]
        for (w, ids) in words.enumerated() where ids.count > 1 {
            for i in 0..<(ids.count - 1) {
                let key = pack(ids[i], ids[i + 1])
                pairCount[key, default: 0] += counts[w]
                pairWords[key, default: []].append(Int32(w))
            }
        }
        var heap = PairHeap()
        for (key, c) in pairCount { heap.push(count: c, key: key) }

        // 3. Merges.
        var merges: [(left: Int32, right: Int32, result: Int32)] = []
        merges.reserveCapacity(mergesWanted)
        var lastTouched = [Int32](repeating: -1, count: words.count)
        var changed: [UInt64: Int] = [:]
        while merges.count < mergesWanted {
            guard let top = heap.pop() else { break }
            let current = pairCount[top.key] ?? 0
            if current != top.count {
                if current > 0 { heap.push(count: current, key: top.key) }
                continue
            }
            if current <= 0 { break }
            let left = Int32(truncatingIfNeeded: top.key >> 32), right = Int32(truncatingIfNeeded: top.key & 0xFFFF_FFFF)
            let newID = Int32(256 + merges.count)
            merges.append((left, right, newID))
            changed.removeAll(keepingCapacity: true)
            let stamp = Int32(merges.count)
            for wi in pairWords[top.key] ?? [] {
                let w = Int(wi)
                if lastTouched[w] == stamp { continue }
                lastTouched[w] = stamp
                let old = words[w]
                guard old.count > 1 else { continue }
                var hasPair = false
                for i in 0..<(old.count - 1) where old[i] == left && old[i + 1] == right { hasPair = true; break }
                if !hasPair { continue }
                let c = counts[w]
                for i in 0..<(old.count - 1) { changed[pack(old[i], old[i + 1]), default: 0] -= c }
                var new: [Int32] = []
                new.reserveCapacity(old.count)
                var i = 0
                while i < old.count {
                    if i + 1 < old.count && old[i] == left && old[i + 1] == right {
                        new.append(newID)
                        i += 2
                    } else {
                        new.append(old[i])
                        i += 1
                    }
                }
                for i in 0..<max(0, new.count - 1) {
                    let key = pack(new[i], new[i + 1])
                    changed[key, default: 0] += c
                    if new[i] == newID || new[i + 1] == newID { pairWords[key, default: []].append(wi) }
                }
                words[w] = new
            }
            for (key, delta) in changed where delta != 0 {
                let n = (pairCount[key] ?? 0) + delta
                pairCount[key] = n
                if delta > 0 { heap.push(count: n, key: key) }
            }
            pairCount[top.key] = 0
            pairWords[top.key] = nil
            if let progress, merges.count % 256 == 0 { progress(merges.count, mergesWanted) }
        }
        guard merges.count == mergesWanted else {
            throw GenError("the corpus has only enough distinct pairs for \(256 + merges.count + special.count) tokens; ask for a smaller --vocab-size")
        }
        var specials: [String: Int32] = [:]
        for (i, s) in special.enumerated() { specials[s] = Int32(256 + merges.count + i) }
        return try BPETokenizer(pattern: pattern, byteIDs: (0..<256).map { Int32($0) }, merges: merges, special: specials)
    }

    @inline(__always) static func pack(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
}

/// Max-heap of (count, pair); equal counts pop the smaller pair key first.
struct PairHeap {
    var items: [(count: Int, key: UInt64)] = []

    @inline(__always) static func above(_ a: (count: Int, key: UInt64), _ b: (count: Int, key: UInt64)) -> Bool {
        a.count > b.count || (a.count == b.count && a.key < b.key)
    }

    mutating func push(count: Int, key: UInt64) {
        items.append((count, key))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !Self.above(items[i], items[parent]) { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (count: Int, key: UInt64)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < items.count && Self.above(items[l], items[best]) { best = l }
                if r < items.count && Self.above(items[r], items[best]) { best = r }
                if best == i { break }
                items.swapAt(i, best)
                i = best
            }
        }
        return top
    }
}

/// Counts distinct byte strings (chunks) with an open-addressing table over a byte arena.
final class ChunkCounter {
    var slots = [Int32](repeating: -1, count: 1 << 16)
    var mask = (1 << 16) - 1
    var entries: [(hash: UInt64, start: Int, length: Int, count: Int)] = []
    var arena: [UInt8] = []

    func add(_ p: UnsafePointer<UInt8>, _ n: Int) {
        let h = PairTable.hashBytes(p, n)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[i]
            if e < 0 { break }
            let entry = entries[Int(e)]
            if entry.hash == h && entry.length == n {
                var same = true
                for k in 0..<n where arena[entry.start + k] != p[k] { same = false; break }
                if same { entries[Int(e)].count += 1; return }
            }
            i = (i + 1) & mask
        }
        slots[i] = Int32(entries.count)
        entries.append((h, arena.count, n, 1))
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        if entries.count * 2 > slots.count { grow() }
    }

    func grow() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        mask = slots.count - 1
        for (k, e) in entries.enumerated() {
            var i = Int(truncatingIfNeeded: e.hash) & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(k)
        }
    }

    func forEach(_ body: (ArraySlice<UInt8>, Int) -> Void) {
        for e in entries { body(arena[e.start..<(e.start + e.length)], e.count) }
    }
}
