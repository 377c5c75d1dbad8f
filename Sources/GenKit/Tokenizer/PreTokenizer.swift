import GenKernels
/// Splits text into the chunks that byte-level BPE merges within, with the exact semantics of
/// GPT-2's and GPT-4's (cl100k) pre-tokenization regular expressions, as a hand-written scanner
/// over UTF-8 (Swift's Regex is far too slow for this). \p{L} and \p{N} are the Unicode
/// general categories L* and N*; \s is the White_Space property, as in Python's `regex`.
public enum SplitPattern: String, Sendable, CaseIterable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`
    case gpt4

    public var regex: String {
        switch self {
        case .gpt2: return #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        case .gpt4: return #"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"#
        }
    }
}

/// Character classes the patterns distinguish.
@usableFromInline enum CharClass: UInt8 { case letter, number, space, other }

/// Class of each ASCII byte.
@usableFromInline let asciiClass: [CharClass] = (0..<128).map { b in
    let u = Unicode.Scalar(UInt8(b))
    if u.properties.isWhitespace { return .space }
    switch u.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
    case .decimalNumber, .letterNumber, .otherNumber: return .number
    default: return .other
    }
}

@inline(__always) @usableFromInline
func classify(_ v: UInt32) -> CharClass {
    if v < 128 { return asciiClass[Int(v)] }
    let u = Unicode.Scalar(v)!
    if u.properties.isWhitespace { return .space }
    switch u.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
    case .decimalNumber, .letterNumber, .otherNumber: return .number
    default: return .other
    }
}

/// A cursor over valid UTF-8.
@usableFromInline struct UTF8Scanner {
    @usableFromInline let p: UnsafePointer<UInt8>
    @usableFromInline let n: Int

    @inline(__always) @usableFromInline init(_ p: UnsafePointer<UInt8>, _ n: Int) { self.p = p; self.n = n }

    /// The scalar at byte offset i and its length in bytes.
    @inline(__always) @usableFromInline
    func scalar(at i: Int) -> (UInt32, Int) { UTF8Decoder.scalar(p, at: i) }

    @inline(__always) @usableFromInline
    func cls(at i: Int) -> CharClass {
        let b = p[i]
        if b < 0x80 { return asciiClass[Int(b)] }
        return classify(scalar(at: i).0)
    }

    /// End of the run of scalars of class `c` starting at i.
    @inline(__always) @usableFromInline
    func run(_ c: CharClass, from i: Int) -> Int {
        var j = i
        while j < n {
            let b = p[j]
            if b < 0x80 {
                if asciiClass[Int(b)] != c { break }
                j += 1
            } else {
                let (v, len) = scalar(at: j)
                if classify(v) != c { break }
                j += len
            }
        }
        return j
    }

    @inline(__always) @usableFromInline
    func isLower(_ i: Int, _ ch: UInt8) -> Bool { i < n && p[i] == ch }

    @inline(__always) @usableFromInline
    func isEither(_ i: Int, _ ch: UInt8) -> Bool { i < n && (p[i] == ch || p[i] == ch - 32) }
}

extension SplitPattern {
    /// Calls `body(start, end)` with the byte range of each chunk of the UTF-8 text p[0..<n].
    @inlinable
    public func split(_ p: UnsafePointer<UInt8>, _ n: Int, _ body: (Int, Int) -> Void) {
        let s = UTF8Scanner(p, n)
        var i = 0
        while i < n {
            let end = self == .gpt2 ? s.nextGPT2(i) : s.nextGPT4(i)
            body(i, end)
            i = end
        }
    }

    /// The chunks of `text`, as strings (for tests and small inputs).
    public func chunks(_ text: String) -> [String] {
        var bytes = Array(text.utf8)
        var out: [String] = []
        let n = bytes.count
        bytes.withUnsafeMutableBufferPointer { b in
            guard let base = b.baseAddress else { return }
            split(base, n) { lo, hi in out.append(String(decoding: UnsafeBufferPointer(start: base + lo, count: hi - lo), as: UTF8.self)) }
        }
        return out
    }
}

extension UTF8Scanner {
    /// Whitespace handling shared by both patterns: `\s+(?!\S)|\s+` at i (a space scalar).
    @inline(__always) @usableFromInline
    func whitespace(_ i: Int) -> Int {
        let j = run(.space, from: i)
        if j == n { return j }
        // Followed by a non-space: give back the last space scalar if that leaves one.
        var last = j - 1
        while p[last] & 0xC0 == 0x80 { last -= 1 }
        return last > i ? last : j
    }

    @usableFromInline
    func nextGPT2(_ i: Int) -> Int {
        let c0 = p[i]
        if c0 == 0x27 {   // '
            if isLower(i + 1, 0x73) || isLower(i + 1, 0x74) || isLower(i + 1, 0x6D) || isLower(i + 1, 0x64) { return i + 2 }
            if (isLower(i + 1, 0x72) && isLower(i + 2, 0x65)) || (isLower(i + 1, 0x76) && isLower(i + 2, 0x65))
                || (isLower(i + 1, 0x6C) && isLower(i + 2, 0x6C)) { return i + 3 }
        }
        var start = i
        if c0 == 0x20 && i + 1 < n {
            let c1 = cls(at: i + 1)
            if c1 != .space { start = i + 1 }
        }
        let c = cls(at: start)
        switch c {
        case .letter, .number, .other: return run(c, from: start)
        case .space: return whitespace(i)
        }
    }

    @usableFromInline
    func nextGPT4(_ i: Int) -> Int {
        let (v0, len0) = scalar(at: i)
        if v0 == 0x27 {   // ' with case-insensitive s d m t | ll ve re
            if isEither(i + 1, 0x73) || isEither(i + 1, 0x64) || isEither(i + 1, 0x6D) || isEither(i + 1, 0x74) { return i + 2 }
            if (isEither(i + 1, 0x6C) && isEither(i + 2, 0x6C)) || (isEither(i + 1, 0x76) && isEither(i + 2, 0x65))
                || (isEither(i + 1, 0x72) && isEither(i + 2, 0x65)) { return i + 3 }
        }
        let c0 = classify(v0)
        // [^\r\n\p{L}\p{N}]?+\p{L}+
        if c0 == .letter { return run(.letter, from: i) }
        if c0 != .number && v0 != 0x0D && v0 != 0x0A && i + len0 < n && cls(at: i + len0) == .letter {
            return run(.letter, from: i + len0)
        }
        // \p{N}{1,3}
        if c0 == .number {
            var j = i + len0
            for _ in 0..<2 where j < n {
                let (v, len) = scalar(at: j)
                if classify(v) != .number { break }
                j += len
            }
            return j
        }
        // ' ?[^\s\p{L}\p{N}]++[\r\n]*'
        var start = -1
        if c0 == .other { start = i }
        else if v0 == 0x20 && i + 1 < n && cls(at: i + 1) == .other { start = i + 1 }
        if start >= 0 {
            var j = run(.other, from: start)
            while j < n && (p[j] == 0x0D || p[j] == 0x0A) { j += 1 }
            return j
        }
        // \s*[\r\n]: up to the last CR or LF of the whitespace run.
        let j = run(.space, from: i)
        var k = j - 1
        while k >= i {
            if p[k] == 0x0D || p[k] == 0x0A { return k + 1 }
            k -= 1
        }
        return whitespace(i)
    }
}
