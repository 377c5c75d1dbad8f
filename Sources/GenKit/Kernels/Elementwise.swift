/// Elementwise kernels: GELU (tanh approximation, as GPT-2), residual addition.
public enum GELU {
    static let s: Float = 0.7978845608028654   // sqrt(2/pi)
    static let k: Float = 0.044715

    /// inp (N) -> out (N); out may be inp.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, count n: Int) {
        Parallel.forRanges(n, minimumPerThread: 4096, Forward(out: out, inp: inp))
    }

    struct Forward: RangeKernel {
        let out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>
        func run(_ range: Range<Int>) {
            var i = range.lowerBound
            let end = range.upperBound
            while i + 16 <= end {
                let x: F16 = load16(inp + i)
                let cube: F16 = x * x * x
                let u: F16 = s * (x + k * cube)
                let half: F16 = 0.5 * x
                store16(half * (1 + simdTanh(u)), out + i)
                i += 16
            }
            while i < end {
                let x = inp[i]
                let u = s * (x + k * x * x * x)
                out[i] = 0.5 * x * (1 + simdTanh(F16(repeating: u))[0])
                i += 1
            }
        }
    }

    /// dinp (N) = dout (N) * gelu'(inp (N)); dinp may be dout.
    public static func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                inp: UnsafePointer<Float>, count n: Int) {
        Parallel.forRanges(n, minimumPerThread: 4096, Backward(dinp: dinp, dout: dout, inp: inp))
    }

    struct Backward: RangeKernel {
        let dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>
        func run(_ range: Range<Int>) {
            var i = range.lowerBound
            let end = range.upperBound
            while i + 16 <= end {
                let x: F16 = load16(inp + i)
                let x2: F16 = x * x
                let inner: F16 = x + k * x2 * x
                let th: F16 = simdTanh(s * inner)
                let sech2: F16 = 1 - th * th
                let dinner: F16 = 1 + (3 * k) * x2
                let left: F16 = 0.5 * (1 + th)
                let right: F16 = (0.5 * s) * x * sech2 * dinner
                store16(load16(dout + i) * (left + right), dinp + i)
                i += 16
            }
            while i < end {
                let x = inp[i]
                let th = simdTanh(F16(repeating: s * (x + k * x * x * x)))[0]
                let local = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * s * (1 + 3 * k * x * x)
                dinp[i] = dout[i] * local
                i += 1
            }
        }
    }
}

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
    // one running residual gradient and adds each branch's input gradient into it.

    /// y (N) += x (N)
    public static func accumulate(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count n: Int) {
        Parallel.forRanges(n, minimumPerThread: 16384, Add(out: y, a: y, b: x))
    }
}

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
