import CSystem
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Matrix products: gen's own (`gen_gemm32` in shim.h, with AVX2 or 512-bit vectors, see `ownProduct`)
/// where it applies, else OpenBLAS's sgemm. Weights are stored `[in, out]` row-major (the layout
/// of GPT-2's `Conv1D`), so every transpose below is a flag, never a copy of the matrix.
///
/// gen owns the cores: OpenBLAS runs single-threaded (loaded so, `BLAS`) and each of gen's
/// threads multiplies its own block of rows or columns. (OpenBLAS's own pool would spin in
/// sched_yield between calls and compete with gen's other kernels for the cores.)
@inline(__always)
func blasTranspose(_ t: Bool) -> CBLAS_TRANSPOSE { t ? CblasTrans : CblasNoTrans }

public enum Matmul {
    /// C (M,N) = alpha · op(A) · op(B) + beta · C, or with a bias (N) C = bias + op(A) · op(B)
    /// (alpha 1, beta 0), split over gen's threads by rows of C, or by columns when the rows are
    /// few. Row-major; lda/ldb/ldc are the row strides. With `sums` (N; B not transposed), B's
    /// column sums are added into it too (`columnSums`' bits).
    @inline(__always)
    static func gemm(_ transA: Bool, _ transB: Bool, M: Int, N: Int, K: Int, alpha: Float = 1,
                     _ A: UnsafePointer<Float>, lda: Int, _ B: UnsafePointer<Float>, ldb: Int,
                     beta: Float, _ C: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>? = nil,
                     sums: UnsafeMutablePointer<Float>? = nil) {
        assert(bias == nil || (alpha == 1 && beta == 0), "a bias is added with alpha 1 and beta 0 only")
        assert(sums == nil || !transB, "column sums are taken of B untransposed only")
        let work = M * N * K
        if Parallel.threads <= 1 || work < 1 << 17 {
            block(transA, transB, M: M, N: N, K: K, alpha: alpha, A, lda: lda, B, ldb: ldb, beta: beta, C, ldc: ldc,
                  bias: bias, sums: sums)
            return
        }
        // Split C by rows (rows of op(A)), or by columns (of op(B), in blocks of `columnBlock`)
        // when the rows are few.
        let blocks = Blocks(byRows: M >= N, transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha,
                            A: A, lda: lda, B: B, ldb: ldb, beta: beta, C: C, ldc: ldc, bias: bias, sums: sums)
        Parallel.forRanges(blocks.byRows ? M : (N + blocks.columnBlock - 1) / blocks.columnBlock, blocks)
    }

    /// C (M,N) = alpha · op(A) · op(B) + beta · C, or C = bias + op(A) · op(B) with a bias (N)
    /// (alpha 1, beta 0), on the calling thread: gen's own product (`gen_gemm32`, with AVX2 or
    /// 512-bit vectors; the bias is its sums' start) when `own` allows it, beta is 0 (any alpha) or 1
    /// (alpha 1) and N a multiple of 32, else OpenBLAS's sgemm (after C's rows are set to the
    /// bias: the same bits). gen's own gives each output the same bits however C is split, so a
    /// product split by columns takes it in every block or in none (`own`): bits that depended
    /// on the number of threads would make runs differ. With `sums` (B not transposed), B's
    /// column sums are added into it: as gen's own product copies B, else after OpenBLAS's.
    @inline(__always)
    static func block(_ transA: Bool, _ transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                      _ A: UnsafePointer<Float>, lda: Int, _ B: UnsafePointer<Float>, ldb: Int,
                      beta: Float, _ C: UnsafeMutablePointer<Float>, ldc: Int, own: Bool = true,
                      bias: UnsafePointer<Float>? = nil, sums: UnsafeMutablePointer<Float>? = nil) {
        if own, beta == 0 || (beta == 1 && alpha == 1), N % 32 == 0, K > 0, let pack = panels(),
           gen_gemm32(M, N, K, A, lda, transA ? 1 : 0, B, ldb, transB ? 1 : 0, C, ldc, alpha, beta == 1 ? 1 : 0,
                      bias, sums, pack) != 0 {
            return
        }
        if let sums { ColumnSums(acc: sums, x: B, M: K, N: N, ld: ldb).run(0..<(N + 15) / 16) }
        var beta = beta
        if let bias {
            for r in 0..<M { (C + r * ldc).update(from: bias, count: N) }
            beta = 1
        }
        beta = clearForProduct(C, rows: M, columns: N, ldc: ldc, beta: beta)
        BLAS.sgemm(blasTranspose(transA), blasTranspose(transB), Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda),
                   B, Int32(ldb), beta, C, Int32(ldc))
    }

    /// C (M,N) = alpha · op(A) · op(B) + beta · C, row-major with row strides lda, ldb, ldc,
    /// split over gen's threads (the general product, for the adapters' small matrices).
    public static func product(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float = 1,
                               _ A: UnsafePointer<Float>, lda: Int, _ B: UnsafePointer<Float>, ldb: Int,
                               beta: Float, _ C: UnsafeMutablePointer<Float>, ldc: Int) {
        gemm(transA, transB, M: M, N: N, K: K, alpha: alpha, A, lda: lda, B, ldb: ldb, beta: beta, C, ldc: ldc)
    }

    /// Whether gen multiplies with its own product (`block`) where it applies: in builds that
    /// have it (`built`: 512-bit vectors, or AVX2 and FMA), on CPUs other than Intel's (measured
    /// faster than OpenBLAS on an AMD EPYC Zen 4 in its 512-bit build, and level with OpenBLAS's
    /// Haswell kernels, within the machine's noise, in its AVX2 build; on Intel's CPUs OpenBLAS's
    /// kernels stay, as measured before on a Xeon's 512-bit build). Else every product is
    /// OpenBLAS's. `GEN_MATMUL=openblas` in the environment gives every product to OpenBLAS,
    /// `GEN_MATMUL=own` takes gen's own on Intel's CPUs too (for comparisons).
    public static let ownProduct: Bool = ownProduct(choice: environmentVariables()["GEN_MATMUL"],
                                                    built: GEN_GEMM_OWN != 0, intel: gen_cpu_is_intel() != 0)

    /// The decision `ownProduct` takes, from `GEN_MATMUL`'s value and the build and CPU.
    public static func ownProduct(choice: String?, built: Bool, intel: Bool) -> Bool {
        guard built else { return false }
        switch choice {
        case "openblas": return false
        case "own": return true
        default: return !intel
        }
    }

    /// The calling thread's buffer for the panels of B that `gen_gemm32` copies
    /// (GEN_GEMM_KC · GEN_GEMM_NC floats), B's running column sums (GEN_GEMM_SUMS) and, with
    /// AVX2, a transposed A's tile (GEN_GEMM_APACK), mapped at the thread's first product and
    /// unmapped when the thread ends; nil in builds without gen's own product (OpenBLAS
    /// multiplies then) or when the memory cannot be had.
    static func panels() -> UnsafeMutablePointer<Float>? {
        guard ownProduct, let key = panelKey else { return nil }
        if let p = pthread_getspecific(key) { return p.assumingMemoryBound(to: Float.self) }
        guard let m = mmap(nil, panelBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              m != MAP_FAILED else { return nil }
        guard pthread_setspecific(key, m) == 0 else {
            munmap(m, panelBytes)
            return nil
        }
        return m.assumingMemoryBound(to: Float.self)
    }

    static let panelBytes = (Int(GEN_GEMM_KC) * Int(GEN_GEMM_NC) + Int(GEN_GEMM_SUMS) + Int(GEN_GEMM_APACK)) * MemoryLayout<Float>.size
    /// The key of each thread's buffer, or nil when the process has no key left (OpenBLAS then).
    static let panelKey: pthread_key_t? = {
        var key = pthread_key_t()
        return pthread_key_create(&key) { p in if let p { munmap(p, Matmul.panelBytes) } } == 0 ? key : nil
    }()

    struct Blocks: RangeKernel {
        let byRows: Bool
        let transA: Bool, transB: Bool
        let M: Int, N: Int, K: Int
        let alpha: Float
        let A: UnsafePointer<Float>, lda: Int
        let B: UnsafePointer<Float>, ldb: Int
        let beta: Float
        let C: UnsafeMutablePointer<Float>, ldc: Int
        let bias: UnsafePointer<Float>?
        /// B's column sums' destination: taken by the first block of rows (every block copies
        /// all of B), or by each block of columns for its own.
        let sums: UnsafeMutablePointer<Float>?

        /// Columns per block when C is split by columns: 32 when N is a multiple of 32, so that
        /// every block can take gen's own product, else 16.
        var columnBlock: Int { N % 32 == 0 ? 32 : 16 }

        func run(_ r: Range<Int>) {
            if byRows {
                let a = transA ? A + r.lowerBound : A + r.lowerBound * lda
                block(transA, transB, M: r.count, N: N, K: K, alpha: alpha, a, lda: lda, B, ldb: ldb, beta: beta,
                      C + r.lowerBound * ldc, ldc: ldc, bias: bias, sums: r.lowerBound == 0 ? sums : nil)
            } else {
                let c0 = r.lowerBound * columnBlock, c1 = min(N, r.upperBound * columnBlock)
                let b = transB ? B + c0 * ldb : B + c0
                block(transA, transB, M: M, N: c1 - c0, K: K, alpha: alpha, A, lda: lda, b, ldb: ldb, beta: beta,
                      C + c0, ldc: ldc, own: columnBlock == 32, bias: bias.map { $0 + c0 }, sums: sums.map { $0 + c0 })
            }
        }
    }

    /// With beta 0, sets C (rows, columns; row stride ldc) to zero and returns 1, the beta that
    /// then adds the product: the same bits as OpenBLAS's beta 0, whose zeroing stores one
    /// float at a time (5% of a small model's training step). Other betas are returned as they are.
    @inline(__always)
    static func clearForProduct(_ C: UnsafeMutablePointer<Float>, rows: Int, columns: Int, ldc: Int, beta: Float) -> Float {
        guard beta == 0 else { return beta }
        if ldc == columns || columns > 64 {
            if ldc == columns { C.update(repeating: 0, count: rows * columns) } else {
                for r in 0..<rows { (C + r * ldc).update(repeating: 0, count: columns) }
            }
            return 1
        }
        // Short rows (attention's heads): stores in place, not a call of memset per row.
        let zero = Float32x16()
        for r in 0..<rows {
            let row = C + r * ldc
            var c = 0
            while c + 16 <= columns { store16(zero, row + c); c += 16 }
            while c < columns { row[c] = 0; c += 1 }
        }
        return 1
    }

    /// out = inp · weight + bias.
    /// inp (M,K), weight (K,N), bias (N) or nil -> out (M,N)
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                               _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                               M: Int, K: Int, N: Int) {
        gemm(false, false, M: M, N: N, K: K, inp, lda: K, weight, ldb: N, beta: 0, out, ldc: N, bias: bias)
    }

    /// Backward of `forward`.
    /// dout (M,N), inp (M,K), weight (K,N) -> dinp (M,K) (overwritten), dweight (K,N) +=,
    /// dbias (N) +=. A nil gradient is not computed (a frozen weight needs none).
    public static func backward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                                dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                M: Int, K: Int, N: Int) {
        if let dinp {
            // dinp (M,K) = dout (M,N) · weightᵀ (N,K)
            gemm(false, true, M: M, N: K, K: N, dout, lda: N, weight, ldb: N, beta: 0, dinp, ldc: K)
        }
        // dweight (K,N) += inpᵀ (K,M) · dout (M,N); dbias (N) += dout's column sums, made as the
        // product copies dout's rows.
        if let dweight {
            gemm(true, false, M: K, N: N, K: M, inp, lda: K, dout, ldb: N, beta: 1, dweight, ldc: N, sums: dbias)
        } else if let dbias {
            columnSums(into: dbias, dout, M: M, N: N)
        }
    }

    /// dbias (N) += Σ_rows x (M,N)
    public static func columnSums(into acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, M: Int, N: Int) {
        // Split the columns across threads so each owns its slice of `acc`.
        let blocks = (N + 15) / 16
        Parallel.forRanges(blocks, minimumPerThread: 8, ColumnSums(acc: acc, x: x, M: M, N: N, ld: N))
    }

    /// acc (columns of the range's blocks of 16) += Σ_rows x (M,N; row stride ld).
    struct ColumnSums: RangeKernel {
        let acc: UnsafeMutablePointer<Float>
        let x: UnsafePointer<Float>
        let M, N, ld: Int
        func run(_ range: Range<Int>) {
            let c0 = range.lowerBound * 16, c1 = min(N, range.upperBound * 16)
            var c = c0
            // Eight vectors of columns at a time, so that each row gives 512 contiguous bytes
            // (one vector a row, rows ld floats apart, is a stride the prefetchers follow badly).
            // Each column's sum is the same chain over the rows either way.
            while c + 128 <= c1 {
                var s0 = Float32x16(), s1 = Float32x16(), s2 = Float32x16(), s3 = Float32x16()
                var s4 = Float32x16(), s5 = Float32x16(), s6 = Float32x16(), s7 = Float32x16()
                var p = x + c
                for _ in 0..<M {
                    s0 += load16(p); s1 += load16(p + 16); s2 += load16(p + 32); s3 += load16(p + 48)
                    s4 += load16(p + 64); s5 += load16(p + 80); s6 += load16(p + 96); s7 += load16(p + 112)
                    p += ld
                }
                store16(load16(acc + c) + s0, acc + c); store16(load16(acc + c + 16) + s1, acc + c + 16)
                store16(load16(acc + c + 32) + s2, acc + c + 32); store16(load16(acc + c + 48) + s3, acc + c + 48)
                store16(load16(acc + c + 64) + s4, acc + c + 64); store16(load16(acc + c + 80) + s5, acc + c + 80)
                store16(load16(acc + c + 96) + s6, acc + c + 96); store16(load16(acc + c + 112) + s7, acc + c + 112)
                c += 128
            }
            while c + 16 <= c1 {
                var s = Float32x16()
                for r in 0..<M { s += load16(x + r * ld + c) }
                store16(load16(acc + c) + s, acc + c)
                c += 16
            }
            while c < c1 {
                var s: Float = 0
                for r in 0..<M { s += x[r * ld + c] }
                acc[c] += s
                c += 1
            }
        }
    }

    /// out = inp · weightᵀ + bias (the tied output head; projections in the decoding layout).
    /// inp (M,K), weight (N,K), bias (N) or nil -> out (M,N)
    public static func forwardTransposed(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                         _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>? = nil,
                                         M: Int, K: Int, N: Int) {
        gemm(false, true, M: M, N: N, K: K, inp, lda: K, weight, ldb: K, beta: 0, out, ldc: N, bias: bias)
    }

    /// dst (N,K) = srcᵀ, src (K,N): by tiles transposed in registers (`gen_transpose_band16`),
    /// split across the pool by blocks of 16 dst rows (src columns), so that each thread writes its own
    /// contiguous part of dst — a fresh buffer's pages are then faulted in (zeroed) by both
    /// threads at once, where bands of src rows had each thread touch every page. Each thread
    /// walks bands of 16 src rows, reading its columns of them in order (16 runs the prefetchers
    /// follow); a tile's 16 rows go to 64-byte pieces of 16 dst rows.
    public static func transpose(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, K: Int, N: Int) {
        Parallel.forRanges((N + 15) / 16, minimumPerThread: K * N >= 1 << 16 ? 1 : 1 << 30, Transposer(dst: dst, src: src, K: K, N: N))
    }

    struct Transposer: RangeKernel {
        let dst: UnsafeMutablePointer<Float>
        let src: UnsafePointer<Float>
        let K, N: Int
        func run(_ blocks: Range<Int>) {
            let c0 = blocks.lowerBound * 16, c1 = min(N, blocks.upperBound * 16)
            // Columns c0..<whole go by tiles, whole..<c1 (the matrix's last, partial block) one by one.
            let whole = c0 + (c1 - c0) / 16 * 16
            var k0 = 0
            while k0 + 16 <= K {
                gen_transpose_band16(src + k0 * N + c0, N, dst + c0 * K + k0, K, whole - c0)
                for n in whole..<c1 {
                    let d = dst + n * K
                    for k in k0..<(k0 + 16) { d[k] = src[k * N + n] }
                }
                k0 += 16
            }
            // The last rows of src (K not a multiple of 16).
            for n in c0..<c1 {
                let d = dst + n * K
                for k in k0..<K { d[k] = src[k * N + n] }
            }
        }
    }

    /// Backward of `forwardTransposed`.
    /// dout (M,N), inp (M,K), weight (N,K) -> dinp (M,K) overwritten, dweight (N,K) +=
    public static func backwardTransposed(dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>?,
                                          dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                                          weight: UnsafePointer<Float>, M: Int, K: Int, N: Int) {
        // dinp (M,K) = dout (M,N) · weight (N,K)
        gemm(false, false, M: M, N: K, K: N, dout, lda: N, weight, ldb: K, beta: 0, dinp, ldc: K)
        // dweight (N,K) += doutᵀ (N,M) · inp (M,K)
        if let dweight { gemm(true, false, M: N, N: K, K: M, dout, lda: N, inp, ldb: K, beta: 1, dweight, ldc: K) }
    }

    /// Slabs of rows `vectorForward` cuts the weights into: a function of the shape alone, so
    /// that its result has the same bits whatever the number of threads.
    public static func vectorSlabs(K: Int, N: Int) -> Int { K * N >= 1 << 15 && K >= 64 ? vectorSlabsMax : 1 }
    public static let vectorSlabsMax = 4
    /// Floats of `partials` that `vectorForward` needs for outputs of up to N values.
    public static func vectorPartials(N: Int) -> Int { (vectorSlabsMax - 1) * N }

    /// y (N) = x (K) · weight (K,N) + bias (N): one row, for decoding, which is bound by reading
    /// the weights. The rows of the weight are cut into `vectorSlabs` slabs, each a contiguous
    /// run of memory which one thread streams from start to end (the way the prefetchers like
    /// it), summing its rows into its own y: slab 0 into y (from the bias), slab s > 0 into
    /// partials[(s-1)·N ..< s·N]; then y += each slab's sum in order. No transposed copy of the
    /// weights is needed.
    public static func vectorForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                     _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                                     K: Int, N: Int, partials: UnsafeMutablePointer<Float>) {
        let slabs = vectorSlabs(K: K, N: N)
        let rows = ((K + slabs - 1) / slabs + 7) / 8 * 8
        Parallel.forRanges(slabs, VectorSlabs(y: y, x: x, weight: weight, bias: bias, K: K, N: N, rows: rows, partials: partials))
        for s in 1..<slabs where s * rows < K {
            Residual.forward(y, y, partials + (s - 1) * N, count: N)
        }
    }

    struct VectorSlabs: RangeKernel {
        let y: UnsafeMutablePointer<Float>
        let x, weight: UnsafePointer<Float>
        let bias: UnsafePointer<Float>?
        let K, N, rows: Int
        let partials: UnsafeMutablePointer<Float>
        func run(_ range: Range<Int>) {
            for s in range {
                let k0 = s * rows, k1 = min(K, k0 + rows)
                guard k0 < k1 else { continue }
                let out = s == 0 ? y : partials + (s - 1) * N
                if s == 0, let bias { out.update(from: bias, count: N) } else { out.update(repeating: 0, count: N) }
                slab(out, k0, k1)
            }
        }
        /// out (N) += x[k0..<k1] · weight[k0..<k1]: eight rows at a time in two sums.
        @inline(__always)
        func slab(_ out: UnsafeMutablePointer<Float>, _ k0: Int, _ k1: Int) {
            let v = N / 16 * 16
            var k = k0
            while k + 8 <= k1 {
                let w = weight + k * N
                let x0 = Float32x16(repeating: x[k]), x1 = Float32x16(repeating: x[k + 1])
                let x2 = Float32x16(repeating: x[k + 2]), x3 = Float32x16(repeating: x[k + 3])
                let x4 = Float32x16(repeating: x[k + 4]), x5 = Float32x16(repeating: x[k + 5])
                let x6 = Float32x16(repeating: x[k + 6]), x7 = Float32x16(repeating: x[k + 7])
                var c = 0
                while c < v {
                    var a = load16(out + c).addingProduct(x0, load16(w + c))
                    var b = x1 * load16(w + N + c)
                    a = a.addingProduct(x2, load16(w + 2 * N + c))
                    b = b.addingProduct(x3, load16(w + 3 * N + c))
                    a = a.addingProduct(x4, load16(w + 4 * N + c))
                    b = b.addingProduct(x5, load16(w + 5 * N + c))
                    a = a.addingProduct(x6, load16(w + 6 * N + c))
                    b = b.addingProduct(x7, load16(w + 7 * N + c))
                    store16(a + b, out + c)
                    c += 16
                }
                while c < N {
                    var a = out[c] + x[k] * w[c], b = x[k + 1] * w[N + c]
                    for j in stride(from: 2, to: 8, by: 2) {
                        a += x[k + j] * w[j * N + c]
                        b += x[k + j + 1] * w[(j + 1) * N + c]
                    }
                    out[c] = a + b
                    c += 1
                }
                k += 8
            }
            while k < k1 {
                axpy(x[k], weight + k * N, out, N)
                k += 1
            }
        }
    }

    /// y (N) = weight (N,K) · x (K) + bias: the tied output head, and the projections in the
    /// decoding layout. Each thread streams its contiguous run of rows one row at a time: one
    /// sequential stream, which the hardware prefetchers follow on their own (software fetches
    /// 4 KB ahead made decoding 12% slower with two threads on an AMD EPYC); x stays in cache.
    public static func vectorForwardTransposed(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                               _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>? = nil, K: Int, N: Int) {
        Parallel.forRanges((N + 3) / 4, minimumPerThread: K * N >= 1 << 15 ? 8 : 1 << 30,
                           VectorRows(y: y, x: x, weight: weight, bias: bias, K: K, N: N))
    }

    struct VectorRows: RangeKernel {
        let y: UnsafeMutablePointer<Float>
        let x, weight: UnsafePointer<Float>
        let bias: UnsafePointer<Float>?
        let K, N: Int
        func run(_ groups: Range<Int>) {
            for n in (groups.lowerBound * 4)..<min(N, groups.upperBound * 4) {
                y[n] = Matmul.dot(row: weight + n * K, x, K: K) + (bias?[n] ?? 0)
            }
        }
    }

    /// w (K) · x (K) as `vectorForwardTransposed` computes each output (the same bits), without
    /// the bias: two accumulators over 32 values, then the rest one by one (not `dot` of
    /// VectorMath, which sums its lanes by halving and so gives other bits).
    @inline(__always)
    public static func dot(row w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, K: Int) -> Float {
        var a0 = Float32x16(), a1 = Float32x16()
        var k = 0
        while k + 32 <= K {
            a0 = a0.addingProduct(load16(w + k), load16(x + k))
            a1 = a1.addingProduct(load16(w + k + 16), load16(x + k + 16))
            k += 32
        }
        var r = (a0 + a1).sum()
        while k < K { r += w[k] * x[k]; k += 1 }
        return r
    }
}
