#if canImport(Glibc)
import Glibc
#endif
/// GELU, the tanh approximation GPT-2 uses.
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
                let x: Float32x16 = load16(inp + i)
                let cube: Float32x16 = x * x * x
                let u: Float32x16 = s * (x + k * cube)
                let half: Float32x16 = 0.5 * x
                store16(half * (1 + simdTanh(u)), out + i)
                i += 16
            }
            while i < end {
                let x = inp[i]
                let u = s * (x + k * x * x * x)
                out[i] = 0.5 * x * (1 + simdTanh(Float32x16(repeating: u))[0])
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
                let x: Float32x16 = load16(inp + i)
                let x2: Float32x16 = x * x
                let inner: Float32x16 = x + k * x2 * x
                let th: Float32x16 = simdTanh(s * inner)
                let sech2: Float32x16 = 1 - th * th
                let dinner: Float32x16 = 1 + (3 * k) * x2
                let left: Float32x16 = 0.5 * (1 + th)
                let right: Float32x16 = (0.5 * s) * x * sech2 * dinner
                store16(load16(dout + i) * (left + right), dinp + i)
                i += 16
            }
            while i < end {
                let x = inp[i]
                let th = simdTanh(Float32x16(repeating: s * (x + k * x * x * x)))[0]
                let local = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * s * (1 + 3 * k * x * x)
                dinp[i] = dout[i] * local
                i += 1
            }
        }
    }
}

/// The exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), for models configured with it
/// (`activation_function: gelu`). Scalar erf from the C library: exact, not fast.
public enum ExactGELU {
    static let invSqrt2: Float = 0.7071067811865476
    static let invSqrt2Pi: Float = 0.3989422804014327

    /// inp (N) -> out (N); out may be inp.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, count n: Int) {
        Parallel.forRanges(n, minimumPerThread: 4096, Forward(out: out, inp: inp))
    }

    struct Forward: RangeKernel {
        let out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>
        func run(_ range: Range<Int>) {
            for i in range {
                let x = inp[i]
                out[i] = 0.5 * x * (1 + erff(x * invSqrt2))
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
            for i in range {
                let x = inp[i]
                let cdf = 0.5 * (1 + erff(x * invSqrt2))
                let pdf = invSqrt2Pi * expf(-0.5 * x * x)
                dinp[i] = dout[i] * (cdf + x * pdf)
            }
        }
    }
}
