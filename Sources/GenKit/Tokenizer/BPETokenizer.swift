import GenKernels
import FoundationEssentials
import Glibc

/// Byte-level BPE as GPT-2 does it: text → UTF-8 → chunks by a split pattern → each chunk's
/// bytes merged by learned pair ranks, lowest rank first (as tiktoken).
public final class BPETokenizer: Tokenizer {
    public let pattern: SplitPattern
    /// The bytes each id stands for (special tokens: their text).
    public let tokenBytes: [[UInt8]]
    /// The id of each single byte.
    public let byteIDs: [Int32]
    /// Merges in rank order: (left, right) → result.
    public let merges: [(left: Int32, right: Int32, result: Int32)]
    /// Special tokens (e.g. "<|endoftext|>") and their ids.
    public let special: [String: Int32]
    /// (left << 32 | right) → (rank << 32 | result)
    let mergeTable: PairTable
    /// Chunks already merged, for the serial path.
    let cache = ChunkCache()

    public init(pattern: SplitPattern, byteIDs: [Int32], merges: [(left: Int32, right: Int32, result: Int32)],
                special: [String: Int32] = [:]) throws {
        guard byteIDs.count == 256 else { throw GenError("a BPE tokenizer needs an id for each of the 256 bytes") }
        self.pattern = pattern
        self.byteIDs = byteIDs
        self.merges = merges
        self.special = special
        // Every id names exactly one of the bytes, merges and special tokens: the vocabulary is
        // dense, and an id outside it is refused before anything is sized by it.
        let size = 256 + merges.count + special.count
        func check(_ id: Int32, _ what: @autoclosure () -> String) throws {
            guard id >= 0 && Int(id) < size else { throw GenError("BPE \(what()) has id \(id), outside the vocabulary of \(size)") }
        }
        for (b, id) in byteIDs.enumerated() { try check(id, "byte \(b)") }
        for (rank, m) in merges.enumerated() {
            try check(m.left, "merge \(rank)'s left token")
            try check(m.right, "merge \(rank)'s right token")
            try check(m.result, "merge \(rank)'s result")
        }
        for (s, id) in special { try check(id, "special token \(s)") }
        var bytes = [[UInt8]?](repeating: nil, count: size)
        for (b, id) in byteIDs.enumerated() {
            guard bytes[Int(id)] == nil else { throw GenError("BPE byte ids are not distinct") }
            bytes[Int(id)] = [UInt8(b)]
        }
        let table = PairTable(capacity: merges.count)
        for (rank, m) in merges.enumerated() {
            guard m.left >= 0, m.right >= 0, Int(m.left) < size, Int(m.right) < size,
                  let l = bytes[Int(m.left)], let r = bytes[Int(m.right)] else {
                throw GenError("BPE merge \(rank) uses a token defined after it")
            }
            guard bytes[Int(m.result)] == nil else { throw GenError("BPE merge \(rank) redefines token \(m.result)") }
            bytes[Int(m.result)] = l + r
            table.insert(key: UInt64(UInt32(m.left)) << 32 | UInt64(UInt32(m.right)),
                         value: UInt64(rank) << 32 | UInt64(UInt32(m.result)))
        }
        for (s, id) in special {
            guard bytes[Int(id)] == nil else { throw GenError("special token \(s) reuses id \(id)") }
            bytes[Int(id)] = Array(s.utf8)
        }
        guard let complete = bytes as? [[UInt8]] ?? (bytes.allSatisfy { $0 != nil } ? bytes.map { $0! } : nil) else {
            let missing = bytes.firstIndex { $0 == nil }!
            throw GenError("BPE vocabulary has no token for id \(missing)")
        }
        tokenBytes = complete
        mergeTable = table
    }

    public var vocabSize: Int { tokenBytes.count }
    public var kind: String { "bpe" }

    public func bytes(of id: Int32) -> [UInt8] {
        id >= 0 && Int(id) < tokenBytes.count ? tokenBytes[Int(id)] : []
    }

    public var newlineToken: Int32? { byteIDs[10] }
    public var endOfText: Int32? { special["<|endoftext|>"] }

    public func encode(_ text: String) throws -> [Int32] { encode(text, allowSpecial: false) }

    /// Token ids of `text`. Special tokens are recognised only when `allowSpecial`; otherwise
    /// their text is encoded as ordinary text.
    public func encode(_ text: String, allowSpecial: Bool) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3)
        if allowSpecial && !special.isEmpty {
            var rest = Substring(text)
            while let (range, id) = firstSpecial(in: rest) {
                encodeOrdinary(rest[..<range.lowerBound], into: &out)
                out.append(id)
                rest = rest[range.upperBound...]
            }
            encodeOrdinary(rest, into: &out)
        } else {
            encodeOrdinary(Substring(text), into: &out)
        }
        return out
    }

    func firstSpecial(in s: Substring) -> (Range<Substring.Index>, Int32)? {
        var best: (Range<Substring.Index>, Int32)?
        for (t, id) in special {
            if let r = s.unicodeScalars.firstRange(of: t.unicodeScalars), best == nil || r.lowerBound < best!.0.lowerBound { best = (r, id) }
        }
        return best
    }

    /// Appends the ids of ordinary text.
    public func encodeOrdinary(_ text: Substring, into out: inout [Int32]) {
        var s = text
        s.withUTF8 { buf in
            guard let base = buf.baseAddress else { return }
            encode(bytes: base, count: buf.count, cache: cache) { out.append(contentsOf: $0) }
        }
    }

    /// Encodes valid UTF-8 p[0..<n] as ordinary text, handing each chunk's ids to `emit`.
    public func encode(bytes p: UnsafePointer<UInt8>, count n: Int, cache: ChunkCache,
                       _ emit: (ArraySlice<Int32>) -> Void) {
        var work = [Int32]()
        work.reserveCapacity(64)
        var one = [Int32](repeating: 0, count: 1)
        pattern.split(p, n) { lo, hi in
            if hi - lo == 1 { one[0] = byteIDs[Int(p[lo])]; emit(one[...]); return }
            if let hit = cache.lookup(p + lo, hi - lo) { emit(hit); return }
            mergeChunk(p + lo, hi - lo, &work)
            cache.remember(p + lo, hi - lo, work)
            emit(work[...])
        }
    }

    /// Encodes a large UTF-8 text on `threads` threads, each from a safe boundary (a newline
    /// after an ASCII letter, where both patterns always split); the ids are identical to the
    /// serial path's.
    public func encodeParallel(bytes p: UnsafePointer<UInt8>, count n: Int, threads: Int) -> [Int32] {
        var cuts = [0]
        for k in 1..<max(1, threads) {
            let c = Self.safeCut(p, n, near: n * k / threads)
            if c > cuts.last! && c < n { cuts.append(c) }
        }
        cuts.append(n)
        var parts = [[Int32]](repeating: [], count: cuts.count - 1)
        parts.withUnsafeMutableBufferPointer { out in
            Parallel.forRanges(cuts.count - 1) { range in
                for k in range {
                    let cache = ChunkCache()
                    var ids: [Int32] = []
                    ids.reserveCapacity((cuts[k + 1] - cuts[k]) / 3)
                    encode(bytes: p + cuts[k], count: cuts[k + 1] - cuts[k], cache: cache) { ids.append(contentsOf: $0) }
                    out[k] = ids
                }
            }
        }
        return parts.flatMap { $0 }
    }

    /// The first position at or after `near` where both split patterns always start a chunk:
    /// a newline right after an ASCII letter (or the end of the text).
    public static func safeCut(_ p: UnsafePointer<UInt8>, _ n: Int, near: Int) -> Int {
        var c = max(1, near)
        while c < n && !isSafeCut(p, c) { c += 1 }
        return min(c, n)
    }

    /// Whether p[c] (c ≥ 1) is a newline right after an ASCII letter.
    @inline(__always)
    static func isSafeCut(_ p: UnsafePointer<UInt8>, _ c: Int) -> Bool {
        p[c] == 0x0A && (p[c - 1] | 0x20) >= 0x61 && (p[c - 1] | 0x20) <= 0x7A
    }

    /// The last position in p[max(1, from)..<n] where both split patterns always start a chunk
    /// (a newline right after an ASCII letter, as `safeCut`), or nil: text cut there encodes to
    /// the same ids in parts as whole.
    public static func lastSafeCut(_ p: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        var c = n - 1
        let first = max(1, from)
        while c >= first {
            if isSafeCut(p, c) { return c }
            c -= 1
        }
        return nil
    }

    /// Merges one chunk's bytes into `parts`: repeatedly the adjacent pair of lowest rank.
    @inline(__always)
    func mergeChunk(_ p: UnsafePointer<UInt8>, _ n: Int, _ parts: inout [Int32]) {
        parts.removeAll(keepingCapacity: true)
        for i in 0..<n { parts.append(byteIDs[Int(p[i])]) }
        while parts.count > 1 {
            var bestRank = UInt64.max, bestAt = -1, bestResult: Int32 = 0
            for i in 0..<(parts.count - 1) {
                let key = UInt64(UInt32(parts[i])) << 32 | UInt64(UInt32(parts[i + 1]))
                if let v = mergeTable.find(key), v >> 32 < bestRank {
                    bestRank = v >> 32
                    bestAt = i
                    bestResult = Int32(truncatingIfNeeded: v & 0xFFFF_FFFF)
                }
            }
            if bestAt < 0 { break }
            parts[bestAt] = bestResult
            parts.remove(at: bestAt + 1)
        }
    }

    /// The checkpoint metadata: `{"type":"bpe","pattern":…,"bytes":[id of byte 0…255],
    /// "merges":[[left,right,result],…] in rank order,"special":{"text":id}}`.
    public var json: String {
        var s = "{\"type\":\"bpe\",\"pattern\":\"\(pattern.rawValue)\",\"bytes\":["
        s += byteIDs.map(String.init).joined(separator: ",")
        s += "],\"merges\":["
        s += merges.map { "[\($0.left),\($0.right),\($0.result)]" }.joined(separator: ",")
        s += "],\"special\":{"
        s += special.sorted { $0.value < $1.value }.map { "\(jsonString($0.key)):\($0.value)" }.joined(separator: ",")
        return s + "}}"
    }

    /// Reads the checkpoint form written by `json`.
    public convenience init(json obj: JSON) throws {
        guard let p = obj["pattern"]?.string, let pattern = SplitPattern(rawValue: p) else {
            throw GenError("the BPE tokenizer names no known pattern (gpt2 or gpt4)")
        }
        guard let bytes = obj["bytes"]?.ints, let merges = obj["merges"]?.array?.map(\.ints), merges.allSatisfy({ $0?.count == 3 }) else {
            throw GenError("the BPE tokenizer metadata is malformed")
        }
        let special = (obj["special"]?.object ?? [:]).mapValues(\.int)
        guard special.values.allSatisfy({ $0 != nil }) else { throw GenError("the BPE tokenizer metadata is malformed") }
        try self.init(pattern: pattern, byteIDs: try bytes.map(tokenID),
                      merges: try merges.map { (try tokenID($0![0]), try tokenID($0![1]), try tokenID($0![2])) },
                      special: try special.mapValues { try tokenID($0!) })
    }
}

/// A token id read from a file, which must fit in 32 bits (the vocabulary check comes after).
func tokenID(_ value: Int) throws -> Int32 {
    guard let id = Int32(exactly: value) else { throw GenError("token id \(value) is out of range") }
    return id
}

/// An open-addressing hash table from pair keys to packed (rank, result). Lookups allocate nothing.
final class PairTable {
    var keys: [UInt64]
    var values: [UInt64]
    let mask: Int
    static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) static func mix(_ k: UInt64) -> Int {
        var x = k &* 0x9E37_79B9_7F4A_7C15
        x ^= x >> 29
        return Int(truncatingIfNeeded: x)
    }

    func insert(key: UInt64, value: UInt64) {
        var i = Self.mix(key) & mask
        while keys[i] != Self.empty && keys[i] != key { i = (i + 1) & mask }
        keys[i] = key
        values[i] = value
    }

    @inline(__always) func find(_ key: UInt64) -> UInt64? {
        var i = Self.mix(key) & mask
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == Self.empty { return nil }
            i = (i + 1) & mask
        }
    }

    @inline(__always) static func hashBytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x100_0000_01B3 }
        return h
    }
}

/// Chunks already merged (bytes → ids), so repeated words are merged once: an open-addressing
/// table over byte and id arenas, bounded in entries. One per encoding thread.
public final class ChunkCache {
    var slots = [Int32](repeating: -1, count: 1 << 19)
    let mask = (1 << 19) - 1
    var entries: [(hash: UInt64, byteStart: Int32, byteCount: Int32, idStart: Int32, idCount: Int32)] = []
    var bytes: [UInt8] = []
    var ids: [Int32] = []
    let limit = 1 << 18

    public init() {}

    @inline(__always) func lookup(_ p: UnsafePointer<UInt8>, _ n: Int) -> ArraySlice<Int32>? {
        let h = PairTable.hashBytes(p, n)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[i]
            if e < 0 { return nil }
            let entry = entries[Int(e)]
            if entry.hash == h && Int(entry.byteCount) == n {
                let start = Int(entry.byteStart)
                var same = true
                for k in 0..<n where bytes[start + k] != p[k] { same = false; break }
                if same { return ids[Int(entry.idStart)..<Int(entry.idStart + entry.idCount)] }
            }
            i = (i + 1) & mask
        }
    }

    func remember(_ p: UnsafePointer<UInt8>, _ n: Int, _ chunkIDs: [Int32]) {
        guard entries.count < limit else { return }
        let h = PairTable.hashBytes(p, n)
        var i = Int(truncatingIfNeeded: h) & mask
        while slots[i] >= 0 { i = (i + 1) & mask }
        slots[i] = Int32(entries.count)
        entries.append((h, Int32(bytes.count), Int32(n), Int32(ids.count), Int32(chunkIDs.count)))
        bytes.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        ids.append(contentsOf: chunkIDs)
    }
}
