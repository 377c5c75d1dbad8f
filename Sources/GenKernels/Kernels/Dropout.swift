/// Inverted dropout: the kept values scaled by 1/(1-p).
public enum Dropout {
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
