import COpenBLAS

/// Matrix products on OpenBLAS's sgemm. Weights are stored `[in, out]` row-major (the layout of
/// GPT-2's `Conv1D`), so every transpose below is a BLAS flag, never a copy.
public enum Matmul {
    /// out = inp · weight + bias.
    /// inp (M,K), weight (K,N), bias (N) or nil -> out (M,N)
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                               _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                               M: Int, K: Int, N: Int) {
        var beta: Float = 0
        if let bias {
            Parallel.forRanges(M, minimumPerThread: 64) { rows in
                for r in rows { (out + r * N).update(from: bias, count: N) }
            }
            beta = 1
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(N), Int32(K),
                    1, inp, Int32(K), weight, Int32(N), beta, out, Int32(N))
    }

    /// Backward of `forward`.
    /// dout (M,N), inp (M,K), weight (K,N) -> dinp (M,K) (overwritten, or accumulated when
    /// `accumulateInput`), dweight (K,N) +=, dbias (N) +=
    public static func backward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                                dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                M: Int, K: Int, N: Int, accumulateInput: Bool = false) {
        if let dinp {
            // dinp (M,K) = dout (M,N) · weightᵀ (N,K)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(K), Int32(N),
                        1, dout, Int32(N), weight, Int32(N), accumulateInput ? 1 : 0, dinp, Int32(K))
        }
        // dweight (K,N) += inpᵀ (K,M) · dout (M,N)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(K), Int32(N), Int32(M),
                    1, inp, Int32(K), dout, Int32(N), 1, dweight, Int32(N))
        if let dbias { columnSums(into: dbias, dout, M: M, N: N) }
    }

    /// dbias (N) += Σ_rows x (M,N)
    public static func columnSums(into acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, M: Int, N: Int) {
        // Split the columns across threads so each owns its slice of `acc`.
        let blocks = (N + 15) / 16
        Parallel.forRanges(blocks, minimumPerThread: 8) { range in
            let c0 = range.lowerBound * 16, c1 = min(N, range.upperBound * 16)
            var c = c0
            while c + 16 <= c1 {
                var s = F16()
                for r in 0..<M { s += load16(x + r * N + c) }
                store16(load16(acc + c) + s, acc + c)
                c += 16
            }
            while c < c1 {
                var s: Float = 0
                for r in 0..<M { s += x[r * N + c] }
                acc[c] += s
                c += 1
            }
        }
    }

    /// out = inp · weightᵀ (used for the tied output head).
    /// inp (M,K), weight (N,K) -> out (M,N)
    public static func forwardTransposed(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                         _ weight: UnsafePointer<Float>, M: Int, K: Int, N: Int) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(N), Int32(K),
                    1, inp, Int32(K), weight, Int32(K), 0, out, Int32(N))
    }

    /// Backward of `forwardTransposed`.
    /// dout (M,N), inp (M,K), weight (N,K) -> dinp (M,K) overwritten, dweight (N,K) +=
    public static func backwardTransposed(dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                                          dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                                          weight: UnsafePointer<Float>, M: Int, K: Int, N: Int) {
        // dinp (M,K) = dout (M,N) · weight (N,K)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(K), Int32(N),
                    1, dout, Int32(N), weight, Int32(K), 0, dinp, Int32(K))
        // dweight (N,K) += doutᵀ (N,M) · inp (M,K)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(N), Int32(K), Int32(M),
                    1, dout, Int32(N), inp, Int32(K), 1, dweight, Int32(K))
    }

    /// y (N) = x (K) · weight (K,N) + bias (N): one row, for decoding.
    public static func vectorForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                     _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                                     K: Int, N: Int) {
        if let bias { y.update(from: bias, count: N) }
        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(K), Int32(N), 1, weight, Int32(N),
                    x, 1, bias == nil ? 0 : 1, y, 1)
    }

    /// y (N) = weight (N,K) · x (K): one row through the tied output head, for decoding.
    public static func vectorForwardTransposed(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                               _ weight: UnsafePointer<Float>, K: Int, N: Int) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(N), Int32(K), 1, weight, Int32(K), x, 1, 0, y, 1)
    }
}
