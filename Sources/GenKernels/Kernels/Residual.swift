/// The residual connection: out = a + b.
public enum Residual {
    /// a (N), b (N) -> out (N) = a + b
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>,
                               _ b: UnsafePointer<Float>, count n: Int) {
        Parallel.forRanges(n, minimumPerThread: 16384, Add(out: out, a: a, b: b))
    }

    struct Add: RangeKernel {
        let out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>
        func run(_ range: Range<Int>) {
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(load16(a + i) + load16(b + i), out + i); i += 16 }
            while i < range.upperBound { out[i] = a[i] + b[i]; i += 1 }
        }
    }
    // The backward of a + b passes the gradient to both inputs unchanged: the model keeps
    // one running residual gradient and each branch's backward adds into it.
}
