import COpenBLAS
import Glibc

/// Causal multi-head self-attention on a fused qkv tensor, in tiles (FlashAttention's plan on
/// the CPU): for each head, blocks of `blockRows` queries against the keys they may see. A
/// block's scores are one sgemm into a (rows, T) tile that stays in cache, its softmax rows are
/// computed whole (a block sees all its keys at once, so no rescaling is needed), and its
/// output is a second sgemm. Only each row's log-sum-exp is kept; the backward pass recomputes
/// the probabilities from it. Memory: (B,NH,T) statistics plus a fixed scratch, not the
/// (B,NH,T,T) probabilities.
public enum Attention {
    /// Query rows per tile.
    public static let blockRows = 64
    /// Tiles of scratch (each work part uses its own).
    public static let parts = 16

    /// Floats of scratch `forward` and `backward` need for contexts up to T.
    public static func scratchCount(T: Int) -> Int { parts * 2 * min(blockRows, T) * T }

    /// qkv (B,T,3C) -> out (B,T,C), stats (B,NH,T): each row's log-sum-exp of its scaled
    /// scores. With `dropout` the output uses the probabilities times its mask, entry
    /// (b·NH + h, t, t2) of the (B,NH,T,T) mask being entry ((b·NH + h)·T + t)·T + t2 of the
    /// stream, drawn as each row is used (the mask is never stored). `scratch` holds
    /// `scratchCount(T:)` floats.
    public static func forward(_ out: UnsafeMutablePointer<Float>, stats: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, dropout: Dropout.Stream? = nil,
                               scratch: UnsafeMutablePointer<Float>, B: Int, T: Int, C: Int, NH: Int) {
        let tiles = Tiles(qkv: qkv, dropout: dropout, scratch: scratch, T: T, C: C, NH: NH)
        let items = B * NH * tiles.blocks
        Parallel.forRanges(min(parts, items), Forward(tiles: tiles, out: out, stats: stats, items: items))
    }

    /// What forward and backward share: the shapes and where a head's tensors are.
    struct Tiles {
        let qkv: UnsafePointer<Float>
        let dropout: Dropout.Stream?
        let scratch: UnsafeMutablePointer<Float>
        let T, C, NH, hs, C3, rows, blocks: Int
        let scale: Float

        init(qkv: UnsafePointer<Float>, dropout: Dropout.Stream?, scratch: UnsafeMutablePointer<Float>, T: Int, C: Int, NH: Int) {
            self.qkv = qkv; self.dropout = dropout; self.scratch = scratch
            self.T = T; self.C = C; self.NH = NH
            hs = C / NH; C3 = 3 * C
            rows = min(Attention.blockRows, T)
            blocks = (T + rows - 1) / rows
            scale = 1 / Float(hs).squareRoot()
        }

        /// Scores of queries q0..<q1 of head bh against keys 0..<q1, scaled, into tile (rows, T).
        @inline(__always)
        func scores(_ tile: UnsafeMutablePointer<Float>, bh: Int, q0: Int, q1: Int) {
            let b = bh / NH, h = bh % NH
            let base = qkv + b * T * C3 + h * hs
            let beta = Matmul.clearForProduct(tile, rows: q1 - q0, columns: q1, ldc: T, beta: 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(q1 - q0), Int32(q1), Int32(hs), scale,
                        base + q0 * C3, Int32(C3), base + C, Int32(C3), beta, tile, Int32(T))
        }

        /// Multiplies row t of head bh (keys 0...t) by the dropout mask's row.
        @inline(__always)
        func applyMask(_ row: UnsafeMutablePointer<Float>, bh: Int, t: Int) {
            dropout?.scale(row, count: t + 1, first: (bh * T + t) * T)
        }
    }

    struct Forward: RangeKernel {
        let tiles: Tiles
        let out, stats: UnsafeMutablePointer<Float>
        let items: Int
        func run(_ range: Range<Int>) {
            let f = tiles, T = f.T
            let parts = min(Attention.parts, items)
            for part in range {
                let tile = f.scratch + part * 2 * f.rows * T
                var item = part
                while item < items {
                    let bh = item / f.blocks, q0 = (item % f.blocks) * f.rows, q1 = min(T, q0 + f.rows)
                    f.scores(tile, bh: bh, q0: q0, q1: q1)
                    for t in q0..<q1 {
                        let row = tile + (t - q0) * T
                        let (m, logSum) = softmaxRow(row, t + 1)
                        stats[bh * T + t] = m + logSum
                        if t + 1 < q1 { (row + t + 1).update(repeating: 0, count: q1 - t - 1) }
                        f.applyMask(row, bh: bh, t: t)
                    }
                    // out rows q0..<q1 (stride C) = P (rows, q1) · V (q1, hs)
                    let b = bh / f.NH, h = bh % f.NH
                    let base = f.qkv + b * T * f.C3 + h * f.hs
                    let o = out + (b * T + q0) * f.C + h * f.hs
                    let beta = Matmul.clearForProduct(o, rows: q1 - q0, columns: f.hs, ldc: f.C, beta: 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(q1 - q0), Int32(f.hs), Int32(q1), 1,
                                tile, Int32(T), base + 2 * f.C, Int32(f.C3), beta, o, Int32(f.C))
                    item += parts
                }
            }
        }
    }

    /// dout (B,T,C), qkv (B,T,3C), stats (B,NH,T) from `forward`, the same `dropout` ->
    /// dqkv (B,T,3C) overwritten. `scratch` holds `scratchCount(T:)` floats.
    public static func backward(dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                qkv: UnsafePointer<Float>, stats: UnsafePointer<Float>, dropout: Dropout.Stream? = nil,
                                scratch: UnsafeMutablePointer<Float>, B: Int, T: Int, C: Int, NH: Int) {
        let tiles = Tiles(qkv: qkv, dropout: dropout, scratch: scratch, T: T, C: C, NH: NH)
        // A head's key and value gradients gather all its query blocks: one head per item.
        let items = B * NH
        Parallel.forRanges(min(parts, items), Backward(tiles: tiles, dqkv: dqkv, dout: dout, stats: stats, items: items))
    }

    struct Backward: RangeKernel {
        let tiles: Tiles
        let dqkv: UnsafeMutablePointer<Float>
        let dout, stats: UnsafePointer<Float>
        let items: Int
        func run(_ range: Range<Int>) {
            let f = tiles, T = f.T, C = f.C, C3 = f.C3, hs = f.hs
            let parts = min(Attention.parts, items)
            for part in range {
                let p = f.scratch + part * 2 * f.rows * T     // probabilities, (rows, T)
                let dp = p + f.rows * T                        // their gradient, then the scores'
                var bh = part
                while bh < items {
                    let b = bh / f.NH, h = bh % f.NH
                    let base = f.qkv + b * T * C3 + h * hs
                    let dbase = dqkv + b * T * C3 + h * hs
                    let dy = dout + b * T * C + h * hs
                    for q0 in stride(from: 0, to: T, by: f.rows) {
                        let q1 = min(T, q0 + f.rows), n = q1 - q0
                        // P recomputed from the scores and each row's log-sum-exp.
                        f.scores(p, bh: bh, q0: q0, q1: q1)
                        // dP (n, q1) = dY (n, hs) · Vᵀ
                        let b0 = Matmul.clearForProduct(dp, rows: n, columns: q1, ldc: T, beta: 0)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(q1), Int32(hs), 1,
                                    dy + q0 * C, Int32(C), base + 2 * C, Int32(C3), b0, dp, Int32(T))
                        for t in q0..<q1 {
                            let row = p + (t - q0) * T, drow = dp + (t - q0) * T
                            let lse = stats[bh * T + t], lv = Float32x16(repeating: lse)
                            var i = 0
                            while i + 16 <= t + 1 { store16(simdExp(load16(row + i) - lv), row + i); i += 16 }
                            while i <= t { row[i] = expf(row[i] - lse); i += 1 }
                            // With a mask, y = Σ (p·m) v: dP = m · (dY·v).
                            f.applyMask(drow, bh: bh, t: t)
                            var sum: Float = 0
                            for t2 in 0...t { sum += row[t2] * drow[t2] }
                            // dS = P ⊙ (dP − Σ P·dP) · scale; nothing past the diagonal.
                            for t2 in 0...t { drow[t2] = row[t2] * (drow[t2] - sum) * f.scale }
                            if t + 1 < q1 {
                                (row + t + 1).update(repeating: 0, count: q1 - t - 1)
                                (drow + t + 1).update(repeating: 0, count: q1 - t - 1)
                            }
                            f.applyMask(row, bh: bh, t: t)
                        }
                        // dQ (n, hs) = dS · K;  dK (q1, hs) += dSᵀ · Q;  dV (q1, hs) += (P⊙M)ᵀ · dY.
                        // Key rows q0..<q1 are first reached by this block (set), earlier ones add.
                        let b1 = Matmul.clearForProduct(dbase + q0 * C3, rows: n, columns: hs, ldc: C3, beta: 0)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(hs), Int32(q1), 1,
                                    dp, Int32(T), base + C, Int32(C3), b1, dbase + q0 * C3, Int32(C3))
                        if q0 > 0 { keyGradients(p, dp, first: 0, count: q0, q0: q0, n: n, beta: 1, base, dbase, dy) }
                        keyGradients(p, dp, first: q0, count: n, q0: q0, n: n, beta: 0, base, dbase, dy)
                    }
                    bh += parts
                }
            }
        }

        /// dK and dV of key rows first..<first+count from query rows q0..<q0+n: (dS)ᵀ·Q and
        /// (P⊙M)ᵀ·dY, set (beta 0) or added (beta 1).
        @inline(__always)
        func keyGradients(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>, first: Int, count: Int, q0: Int, n: Int,
                          beta: Float, _ base: UnsafePointer<Float>, _ dbase: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>) {
            let f = tiles, T = f.T, C = f.C, C3 = f.C3
            let dk = dbase + first * C3 + C, dv = dbase + first * C3 + 2 * C
            let bk = Matmul.clearForProduct(dk, rows: count, columns: f.hs, ldc: C3, beta: beta)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(count), Int32(f.hs), Int32(n), 1,
                        dp + first, Int32(T), base + q0 * C3, Int32(C3), bk, dk, Int32(C3))
            let bv = Matmul.clearForProduct(dv, rows: count, columns: f.hs, ldc: C3, beta: beta)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(count), Int32(f.hs), Int32(n), 1,
                        p + first, Int32(T), dy + q0 * C, Int32(C), bv, dv, Int32(C3))
        }
    }

    /// Stores a qkv row's key and value (qkv (3C)) as position `position` of caches laid out
    /// (NH,capacity,hs) each, where each head's keys (values) are one contiguous run.
    public static func cache(_ qkv: UnsafePointer<Float>, keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>,
                             position: Int, capacity: Int, C: Int, NH: Int) {
        let hs = C / NH
        for h in 0..<NH {
            (keys + (h * capacity + position) * hs).update(from: qkv + C + h * hs, count: hs)
            (values + (h * capacity + position) * hs).update(from: qkv + 2 * C + h * hs, count: hs)
        }
    }

    /// One query against the keys and values of n positions, for decoding.
    /// q (C) -> out (C); scores holds NH*n floats. Head h's key and value of position t are at
    /// h·headStride + t·stride in kCache and vCache (unless given, hs and C: rows of C; stride
    /// 3C reads them from a qkv matrix; hs and capacity·hs, the caches `cache` writes).
    public static func forwardOne(_ out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                                  kCache: UnsafePointer<Float>, vCache: UnsafePointer<Float>,
                                  scores: UnsafeMutablePointer<Float>, n: Int, C: Int, NH: Int,
                                  stride: Int? = nil, headStride: Int? = nil) {
        let hs = C / NH
        let scale = 1 / Float(hs).squareRoot()
        Parallel.forRanges(NH, minimumPerThread: n >= 32 ? 1 : NH,
                           ForwardOne(out: out, q: q, kCache: kCache, vCache: vCache, scores: scores, n: n,
                                      stride: stride ?? C, headStride: headStride ?? hs, hs: hs, scale: scale))
    }

    struct ForwardOne: RangeKernel {
        let out: UnsafeMutablePointer<Float>
        let q, kCache, vCache: UnsafePointer<Float>
        let scores: UnsafeMutablePointer<Float>
        let n, stride, headStride, hs: Int
        let scale: Float
        func run(_ heads: Range<Int>) {
            for h in heads {
                let row = scores + h * n
                let qh = q + h * hs
                let keys = kCache + h * headStride, values = vCache + h * headStride
                for t2 in 0..<n { row[t2] = dot(qh, keys + t2 * stride, hs) * scale }
                softmaxRow(row, n)
                let o = out + h * hs
                o.update(repeating: 0, count: hs)
                for t2 in 0..<n { axpy(row[t2], values + t2 * stride, o, hs) }
            }
        }
    }
}
