/// gen's one UTF-8 decoder: the length a lead byte announces, the decoding of text already
/// known to be valid (the split scanner's hot path), and the checked decoding of untrusted
/// bytes (corpora), which names the offending byte.
enum UTF8Decoder {
    /// Bytes of the sequence that lead byte `b` starts (1 for ASCII, and for a byte that
    /// cannot start a sequence).
    @inline(__always)
    static func length(lead b: UInt8) -> Int {
        b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
    }

    /// The scalar at p[i] of valid UTF-8, and its length in bytes.
    @inline(__always)
    static func scalar(_ p: UnsafePointer<UInt8>, at i: Int) -> (UInt32, Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 { return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3) }
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6 | UInt32(p[i + 3] & 0x3F), 4)
    }

    enum Step {
        /// A scalar of `length` bytes.
        case scalar(UInt32, length: Int)
        /// The sequence runs past the end of the bytes given.
        case incomplete
        /// Not UTF-8: the byte at `offset` (from i) cannot be here; `offset` 0 with a valid
        /// lead byte means an overlong, surrogate or out-of-range sequence.
        case invalid(offset: Int)
    }

    /// Checks and decodes the sequence at p[i] of p[0..<n].
    @inline(__always)
    static func next(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Step {
        let b0 = p[i]
        if b0 < 0x80 { return .scalar(UInt32(b0), length: 1) }
        let len: Int
        var v: UInt32
        let minimum: UInt32
        switch b0 {
        case 0xC2...0xDF: len = 2; v = UInt32(b0 & 0x1F); minimum = 0x80
        case 0xE0...0xEF: len = 3; v = UInt32(b0 & 0x0F); minimum = 0x800
        case 0xF0...0xF4: len = 4; v = UInt32(b0 & 0x07); minimum = 0x10000
        default: return .invalid(offset: 0)
        }
        let present = min(len, n - i)   // a bad byte before the end is invalid, not incomplete
        for k in 1..<present {
            let b = p[i + k]
            guard b & 0xC0 == 0x80 else { return .invalid(offset: k) }
            v = v << 6 | UInt32(b & 0x3F)
        }
        if present < len { return .incomplete }
        guard v >= minimum, v <= 0x10FFFF, !(0xD800...0xDFFF).contains(v) else { return .invalid(offset: 0) }
        return .scalar(v, length: len)
    }
}
