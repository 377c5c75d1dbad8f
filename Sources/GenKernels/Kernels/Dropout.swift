import CSystem

/// Inverted dropout: the kept values scaled by 1/(1-p).
public enum Dropout {
    /// mask (n) = 0 with probability p, else 1/(1-p) (0 <= p < 1), drawn from the stream `key`:
    /// entry i depends on (key, first + i) alone (a counter-based generator, SplitMix64's
    /// output function), so the draw is split over threads and gives the same mask on any
    /// number of them.
    public static func drawMask(_ mask: UnsafeMutablePointer<Float>, count n: Int, p: Float, key: UInt64, first: Int = 0) {
        Parallel.forRanges(n, minimumPerThread: 16384, DrawMask(mask: mask, first: first, p: p, key: key))
    }

    /// For each of `rows` rows of T entries, the mask's first `t + 1` entries (t = row % T, the
    /// causal part of an attention row); entry (row, j) is entry row·T + j of the stream `key`.
    public static func drawCausalMask(_ mask: UnsafeMutablePointer<Float>, rows: Int, T: Int, p: Float, key: UInt64) {
        Parallel.forRanges(rows, minimumPerThread: max(1, 16384 / max(1, T)), DrawCausalMask(mask: mask, T: T, p: p, key: key))
    }

    /// The integer form of `u < p` for u = x / 2^24, x a 24-bit draw: x < ⌈p·2^24⌉.
    static func threshold(_ p: Float) -> UInt32 { UInt32((Double(p) * 16_777_216).rounded(.up)) }

    struct DrawMask: RangeKernel {
        let mask: UnsafeMutablePointer<Float>
        let first: Int
        let p: Float, key: UInt64
        func run(_ range: Range<Int>) {
            gen_dropout_mask(mask + range.lowerBound, range.count, key, UInt64(first + range.lowerBound), threshold(p), 1 / (1 - p))
        }
    }

    struct DrawCausalMask: RangeKernel {
        let mask: UnsafeMutablePointer<Float>
        let T: Int
        let p: Float, key: UInt64
        func run(_ range: Range<Int>) {
            let t = threshold(p), keep = 1 / (1 - p)
            for row in range {
                gen_dropout_mask(mask + row * T, row % T + 1, key, UInt64(row * T), t, keep)
            }
        }
    }

    /// Inverted dropout in place: x (N) *= mask (N), where mask holds 0 or 1/(1-p).
    /// The mask is drawn by the caller's generator so that runs are reproducible.
    public static func apply(_ x: UnsafeMutablePointer<Float>, mask: UnsafePointer<Float>, count n: Int) {
        Parallel.forRanges(n, minimumPerThread: 16384, Apply(x: x, mask: mask))
    }

    struct Apply: RangeKernel {
        let x: UnsafeMutablePointer<Float>, mask: UnsafePointer<Float>
        func run(_ range: Range<Int>) {
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(load16(x + i) * load16(mask + i), x + i); i += 16 }
            while i < range.upperBound { x[i] *= mask[i]; i += 1 }
        }
    }
}
