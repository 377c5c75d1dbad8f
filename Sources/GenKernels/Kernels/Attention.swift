import CSystem
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
    public static func scratchCount(T: Int) -> Int { parts * partFloats(T: T) }

    /// Floats of one part's scratch: the probabilities and their gradient (rows, T) and, for
    /// small heads, the head's keys and values transposed (hs ≤ `Direct.maxHead`, T rounded up to 16).
    static func partFloats(T: Int) -> Int { 2 * min(blockRows, T) * T + 2 * Direct.maxHead * Direct.panelStride(T: T) }

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
        /// Floats of scratch per part, the stride of the transposed panels, and whether the
        /// products run in registers (`Direct`) rather than on OpenBLAS.
        let partFloats, tp: Int
        let direct: Bool

        init(qkv: UnsafePointer<Float>, dropout: Dropout.Stream?, scratch: UnsafeMutablePointer<Float>, T: Int, C: Int, NH: Int) {
            self.qkv = qkv; self.dropout = dropout; self.scratch = scratch
            self.T = T; self.C = C; self.NH = NH
            hs = C / NH; C3 = 3 * C
            rows = min(Attention.blockRows, T)
            blocks = (T + rows - 1) / rows
            scale = 1 / Float(hs).squareRoot()
            partFloats = Attention.partFloats(T: T)
            tp = Direct.panelStride(T: T)
            direct = Direct.handles(hs: hs, T: T)
        }

        /// Scores of queries q0..<q1 of head bh against keys 0..<q1, scaled, into tile (rows, T).
        @inline(__always)
        func scores(_ tile: UnsafeMutablePointer<Float>, bh: Int, q0: Int, q1: Int) {
            let b = bh / NH, h = bh % NH
            let base = qkv + b * T * C3 + h * hs
            Matmul.block(false, true, M: q1 - q0, N: q1, K: hs, alpha: scale, base + q0 * C3, lda: C3, base + C,
                         ldb: C3, beta: 0, tile, ldc: T)
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
                let tile = f.scratch + part * f.partFloats
                var item = part
                while item < items {
                    let bh = item / f.blocks, q0 = (item % f.blocks) * f.rows, q1 = min(T, q0 + f.rows)
                    if f.direct {
                        direct(tile, bh: bh, q0: q0, q1: q1)
                        item += parts
                        continue
                    }
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
                    Matmul.block(false, false, M: q1 - q0, N: f.hs, K: q1, alpha: 1, tile, lda: T, base + 2 * f.C,
                                 ldb: f.C3, beta: 0, o, ldc: f.C)
                    item += parts
                }
            }
        }

        /// The block's scores four rows at a time against the keys the rows see, each row's
        /// softmax, then the outputs, all in registers and cache.
        @inline(__always)
        func direct(_ tile: UnsafeMutablePointer<Float>, bh: Int, q0: Int, q1: Int) {
            let f = tiles, T = f.T, C3 = f.C3, hs = f.hs
            let b = bh / f.NH, h = bh % f.NH
            let base = f.qkv + b * T * C3 + h * hs
            let kt = tile + 2 * f.rows * T, reach = max(4, Direct.groupRows(hs: hs))
            Direct.transpose(kt, stride: f.tp, base + f.C, ldx: C3, count: q1, hs: hs)
            var t = q0
            while t < q1 {
                let n = min(4, q1 - t)
                Direct.rowsTimesPanel(tile + (t - q0) * T, ldo: T, base + t * C3, ldx: C3, rows: n, kt, stride: f.tp,
                                      count: t + n, hs: hs, scale: f.scale)
                for tt in t..<(t + n) {
                    let row = tile + (tt - q0) * T
                    let (m, logSum) = softmaxRow(row, tt + 1)
                    stats[bh * T + tt] = m + logSum
                    // Zeros past the diagonal as far as a group of rows reads.
                    let z = min(q1, tt + reach)
                    if tt + 1 < z { (row + tt + 1).update(repeating: 0, count: z - tt - 1) }
                    f.applyMask(row, bh: bh, t: tt)
                }
                t += n
            }
            let g = Direct.groupRows(hs: hs)
            t = q0
            while t < q1 {
                let n = min(g, q1 - t)
                Direct.combination(out + (b * T + t) * f.C + h * hs, ldo: f.C, rows: n, tile + (t - q0) * T, wr: T, wi: 1,
                                   count: t + n, base + 2 * f.C, stride: C3, hs: hs, addRows: 0)
                t += n
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
                let p = f.scratch + part * f.partFloats     // probabilities, (rows, T)
                let dp = p + f.rows * T                        // their gradient, then the scores'
                var bh = part
                while bh < items {
                    let b = bh / f.NH, h = bh % f.NH
                    let base = f.qkv + b * T * C3 + h * hs
                    let dbase = dqkv + b * T * C3 + h * hs
                    let dy = dout + b * T * C + h * hs
                    if f.direct {
                        direct(p, dp, bh: bh, base, dbase, dy)
                        bh += parts
                        continue
                    }
                    for q0 in stride(from: 0, to: T, by: f.rows) {
                        let q1 = min(T, q0 + f.rows), n = q1 - q0
                        // P recomputed from the scores and each row's log-sum-exp.
                        f.scores(p, bh: bh, q0: q0, q1: q1)
                        // dP (n, q1) = dY (n, hs) · Vᵀ
                        Matmul.block(false, true, M: n, N: q1, K: hs, alpha: 1, dy + q0 * C, lda: C, base + 2 * C,
                                     ldb: C3, beta: 0, dp, ldc: T)
                        for t in q0..<q1 {
                            let row = p + (t - q0) * T, drow = dp + (t - q0) * T
                            scoreGradient(row, drow, bh: bh, t: t)
                            if t + 1 < q1 {
                                (row + t + 1).update(repeating: 0, count: q1 - t - 1)
                                (drow + t + 1).update(repeating: 0, count: q1 - t - 1)
                            }
                            f.applyMask(row, bh: bh, t: t)
                        }
                        // dQ (n, hs) = dS · K;  dK (q1, hs) += dSᵀ · Q;  dV (q1, hs) += (P⊙M)ᵀ · dY.
                        // Key rows q0..<q1 are first reached by this block (set), earlier ones add.
                        Matmul.block(false, false, M: n, N: hs, K: q1, alpha: 1, dp, lda: T, base + C, ldb: C3,
                                     beta: 0, dbase + q0 * C3, ldc: C3)
                        if q0 > 0 { keyGradients(p, dp, first: 0, count: q0, q0: q0, n: n, beta: 1, base, dbase, dy) }
                        keyGradients(p, dp, first: q0, count: n, q0: q0, n: n, beta: 0, base, dbase, dy)
                    }
                    bh += parts
                }
            }
        }

        /// Row t of head bh (keys 0...t): its scaled scores in `row` become the probabilities,
        /// recomputed from the row's log-sum-exp, and their gradient in `drow` the scores':
        /// with a mask, y = Σ (p·m) v, so dP = m · (dY·v); dS = P ⊙ (dP − Σ P·dP) · scale.
        @inline(__always)
        func scoreGradient(_ row: UnsafeMutablePointer<Float>, _ drow: UnsafeMutablePointer<Float>, bh: Int, t: Int) {
            let f = tiles
            let lse = stats[bh * f.T + t], lv = Float32x16(repeating: lse)
            var i = 0
            while i + 16 <= t + 1 { store16(simdExp(load16(row + i) - lv), row + i); i += 16 }
            while i <= t { row[i] = expf(row[i] - lse); i += 1 }
            f.applyMask(drow, bh: bh, t: t)
            softmaxGradientRow(row, drow, t + 1, scale: f.scale)
        }

        /// The head's blocks with products in registers: probabilities and their gradient
        /// four query rows at a time over the keys the rows see, then the query gradients, then
        /// the key and value gradients of the key rows the block's queries see.
        @inline(__always)
        func direct(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>, bh: Int,
                    _ base: UnsafePointer<Float>, _ dbase: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>) {
            let f = tiles, T = f.T, C = f.C, C3 = f.C3, hs = f.hs, g = Direct.groupRows(hs: hs)
            let reach = max(4, g)
            let kt = dp + f.rows * T, vt = kt + Direct.maxHead * f.tp
            Direct.transpose(kt, stride: f.tp, base + C, ldx: C3, count: T, hs: hs)
            Direct.transpose(vt, stride: f.tp, base + 2 * C, ldx: C3, count: T, hs: hs)
            for q0 in stride(from: 0, to: T, by: f.rows) {
                let q1 = min(T, q0 + f.rows)
                var t = q0
                while t < q1 {
                    let n = min(4, q1 - t)
                    Direct.rowsTimesPanel(p + (t - q0) * T, ldo: T, base + t * C3, ldx: C3, rows: n, kt, stride: f.tp,
                                          count: t + n, hs: hs, scale: f.scale)
                    Direct.rowsTimesPanel(dp + (t - q0) * T, ldo: T, dy + t * C, ldx: C, rows: n, vt, stride: f.tp,
                                          count: t + n, hs: hs, scale: 1)
                    for tt in t..<(t + n) {
                        let row = p + (tt - q0) * T, drow = dp + (tt - q0) * T
                        scoreGradient(row, drow, bh: bh, t: tt)
                        // Zeros past the diagonal as far as a group of rows reads.
                        let z = min(q1, tt + reach)
                        if tt + 1 < z {
                            (row + tt + 1).update(repeating: 0, count: z - tt - 1)
                            (drow + tt + 1).update(repeating: 0, count: z - tt - 1)
                        }
                        f.applyMask(row, bh: bh, t: tt)
                    }
                    t += n
                }
                // dQ rows q0..<q1 = dS · K
                t = q0
                while t < q1 {
                    let n = min(g, q1 - t)
                    Direct.combination(dbase + t * C3, ldo: C3, rows: n, dp + (t - q0) * T, wr: T, wi: 1, count: t + n,
                                       base + C, stride: C3, hs: hs, addRows: 0)
                    t += n
                }
                // dK, dV of key rows 0..<q1 from the block's rows that see them (from max(q0, t2));
                // rows q0..<q1 are first reached by this block (set), earlier ones add.
                var t2 = 0
                while t2 < q1 {
                    let n = min(g, q1 - t2), t0 = max(q0, t2), w = (t0 - q0) * T + t2
                    let adding = max(0, min(n, q0 - t2))
                    Direct.combination(dbase + t2 * C3 + C, ldo: C3, rows: n, dp + w, wr: 1, wi: T, count: q1 - t0,
                                       base + t0 * C3, stride: C3, hs: hs, addRows: adding)
                    Direct.combination(dbase + t2 * C3 + 2 * C, ldo: C3, rows: n, p + w, wr: 1, wi: T, count: q1 - t0,
                                       dy + t0 * C, stride: C, hs: hs, addRows: adding)
                    t2 += n
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
            Matmul.block(true, false, M: count, N: f.hs, K: n, alpha: 1, dp + first, lda: T, base + q0 * C3, ldb: C3,
                         beta: beta, dk, ldc: C3)
            Matmul.block(true, false, M: count, N: f.hs, K: n, alpha: 1, p + first, lda: T, dy + q0 * C, ldb: C,
                         beta: beta, dv, ldc: C3)
        }
    }

    /// Attention's products for small heads (16, 32 or 64 floats) in vector registers, over
    /// only the keys each row sees: for short contexts sgemm spends more on packing its
    /// operands and on the masked half of each tile than on the products. Each kernel keeps
    /// four vectors of 16 sums in flight (four rows × 16 columns, or 64 / hs rows × hs).
    enum Direct {
        static let maxHead = 64
        /// Whether this build has 512-bit vectors (32 of them: eight sums in flight).
        static let wide = GEN_VECTORS_512 != 0

        /// Whether heads of hs floats over contexts of T use these products.
        static func handles(hs: Int, T: Int) -> Bool { (hs == 16 || hs == 32 || hs == 64) && T <= 64 }

        /// Row stride of a transposed panel: T rounded up to 16, so a row's last vector stays in it.
        static func panelStride(T: Int) -> Int { (T + 15) / 16 * 16 }

        /// panel (hs, stride) = x (count, hs; row stride ldx) transposed: bands of 16 rows in
        /// 8×8 register tiles, the last rows one value at a time.
        @inline(__always)
        static func transpose(_ panel: UnsafeMutablePointer<Float>, stride: Int, _ x: UnsafePointer<Float>, ldx: Int,
                              count: Int, hs: Int) {
            let bands = count / 16
            for band in 0..<bands { gen_transpose_band16(x + band * 16 * ldx, ldx, panel + band * 16, stride, hs) }
            for t in (bands * 16)..<count {
                let src = x + t * ldx
                for h in 0..<hs { panel[h * stride + t] = src[h] }
            }
        }

        /// out row r (row stride ldo) [0..<count] = scale · x_r (hs) · panel (hs, count), x_r at
        /// x + r·ldx, for rows r < R ≤ 4, 16 columns at a time, or 32 with 512-bit vectors (eight
        /// sums in flight hide the FMA's latency; each sum is the same chain over h either way).
        @inline(__always)
        static func rowsTimesPanel(_ out: UnsafeMutablePointer<Float>, ldo: Int, _ x: UnsafePointer<Float>, ldx: Int, rows R: Int,
                                   _ panel: UnsafePointer<Float>, stride: Int, count: Int, hs: Int, scale: Float) {
            let x0 = x, x1 = x + min(1, R - 1) * ldx, x2 = x + min(2, R - 1) * ldx, x3 = x + min(3, R - 1) * ldx
            let sv = Float32x16(repeating: scale)
            var c = 0
            // Two column vectors while a second one starts before count (the panel's stride is a
            // multiple of 16, so its load stays in the row).
            while wide && c + 16 < count {
                var a0 = Float32x16(), a1 = Float32x16(), a2 = Float32x16(), a3 = Float32x16()
                var b0 = Float32x16(), b1 = Float32x16(), b2 = Float32x16(), b3 = Float32x16()
                var pp = panel + c
                for h in 0..<hs {
                    let u = load16(pp), v = load16(pp + 16)
                    let s0 = Float32x16(repeating: x0[h]), s1 = Float32x16(repeating: x1[h])
                    let s2 = Float32x16(repeating: x2[h]), s3 = Float32x16(repeating: x3[h])
                    a0 = a0.addingProduct(s0, u); b0 = b0.addingProduct(s0, v)
                    a1 = a1.addingProduct(s1, u); b1 = b1.addingProduct(s1, v)
                    a2 = a2.addingProduct(s2, u); b2 = b2.addingProduct(s2, v)
                    a3 = a3.addingProduct(s3, u); b3 = b3.addingProduct(s3, v)
                    pp += stride
                }
                let n = min(16, count - c - 16)
                store16(a0 * sv, out + c); put(b0 * sv, out + c + 16, n)
                if R > 1 { store16(a1 * sv, out + ldo + c); put(b1 * sv, out + ldo + c + 16, n) }
                if R > 2 { store16(a2 * sv, out + 2 * ldo + c); put(b2 * sv, out + 2 * ldo + c + 16, n) }
                if R > 3 { store16(a3 * sv, out + 3 * ldo + c); put(b3 * sv, out + 3 * ldo + c + 16, n) }
                c += 32
            }
            while c < count {
                var a0 = Float32x16(), a1 = Float32x16(), a2 = Float32x16(), a3 = Float32x16()
                var pp = panel + c
                for h in 0..<hs {
                    let b = load16(pp)
                    a0 = a0.addingProduct(Float32x16(repeating: x0[h]), b)
                    a1 = a1.addingProduct(Float32x16(repeating: x1[h]), b)
                    a2 = a2.addingProduct(Float32x16(repeating: x2[h]), b)
                    a3 = a3.addingProduct(Float32x16(repeating: x3[h]), b)
                    pp += stride
                }
                let n = min(16, count - c)
                put(a0 * sv, out + c, n)
                if R > 1 { put(a1 * sv, out + ldo + c, n) }
                if R > 2 { put(a2 * sv, out + 2 * ldo + c, n) }
                if R > 3 { put(a3 * sv, out + 3 * ldo + c, n) }
                c += 16
            }
        }

        /// Rows `combination` takes at once for heads of hs floats: four vectors of sums in
        /// flight, or eight with 512-bit vectors (32 registers hold them).
        static func groupRows(hs: Int) -> Int { (wide ? 128 : 64) / hs }

        /// out row r (row stride ldo) = Σ_{i<count} w[r·wr + i·wi] · v[i·stride ..< i·stride + hs],
        /// for rows r < R ≤ groupRows(hs); the first `addRows` rows add to what out holds, the others are set.
        @inline(__always)
        static func combination(_ out: UnsafeMutablePointer<Float>, ldo: Int, rows R: Int, _ w: UnsafePointer<Float>, wr: Int, wi: Int,
                                count: Int, _ v: UnsafePointer<Float>, stride: Int, hs: Int, addRows: Int) {
            // Each head size its own loop, so that sums of one row share its weight's broadcast
            // and sums of one vector its load.
            switch hs {
            case 16: combination(out, ldo: ldo, rows: R, w, wr: wr, wi: wi, count: count, v, stride: stride, nv: 1, addRows: addRows)
            case 32: combination(out, ldo: ldo, rows: R, w, wr: wr, wi: wi, count: count, v, stride: stride, nv: 2, addRows: addRows)
            default: combination(out, ldo: ldo, rows: R, w, wr: wr, wi: wi, count: count, v, stride: stride, nv: 4, addRows: addRows)
            }
        }

        /// `combination` for heads of 16·nv floats (transparent: each call site gets its loop
        /// for a constant nv).
        @_transparent
        static func combination(_ out: UnsafeMutablePointer<Float>, ldo: Int, rows R: Int, _ w: UnsafePointer<Float>, wr: Int, wi: Int,
                                count: Int, _ v: UnsafePointer<Float>, stride: Int, nv: Int, addRows: Int) {
            // Sum k (of four or eight) is row k / nv's vector k % nv.
            let r1 = 1 / nv, r2 = 2 / nv, r3 = 3 / nv
            let w1 = min(r1, R - 1) * wr, w2 = min(r2, R - 1) * wr, w3 = min(r3, R - 1) * wr
            let v1 = 16 * (1 % nv), v2 = 16 * (2 % nv), v3 = 16 * (3 % nv)
            var a0 = Float32x16(), a1 = Float32x16(), a2 = Float32x16(), a3 = Float32x16()
            var wp = w, vp = v
            if wide {
                let r4 = 4 / nv, r5 = 5 / nv, r6 = 6 / nv, r7 = 7 / nv
                let w4 = min(r4, R - 1) * wr, w5 = min(r5, R - 1) * wr, w6 = min(r6, R - 1) * wr, w7 = min(r7, R - 1) * wr
                let v4 = 16 * (4 % nv), v5 = 16 * (5 % nv), v6 = 16 * (6 % nv), v7 = 16 * (7 % nv)
                var a4 = Float32x16(), a5 = Float32x16(), a6 = Float32x16(), a7 = Float32x16()
                for _ in 0..<count {
                    a0 = a0.addingProduct(Float32x16(repeating: wp[0]), load16(vp))
                    a1 = a1.addingProduct(Float32x16(repeating: wp[w1]), load16(vp + v1))
                    a2 = a2.addingProduct(Float32x16(repeating: wp[w2]), load16(vp + v2))
                    a3 = a3.addingProduct(Float32x16(repeating: wp[w3]), load16(vp + v3))
                    a4 = a4.addingProduct(Float32x16(repeating: wp[w4]), load16(vp + v4))
                    a5 = a5.addingProduct(Float32x16(repeating: wp[w5]), load16(vp + v5))
                    a6 = a6.addingProduct(Float32x16(repeating: wp[w6]), load16(vp + v6))
                    a7 = a7.addingProduct(Float32x16(repeating: wp[w7]), load16(vp + v7))
                    wp += wi; vp += stride
                }
                if r4 < R { give(a4, out + r4 * ldo + v4, r4 < addRows) }
                if r5 < R { give(a5, out + r5 * ldo + v5, r5 < addRows) }
                if r6 < R { give(a6, out + r6 * ldo + v6, r6 < addRows) }
                if r7 < R { give(a7, out + r7 * ldo + v7, r7 < addRows) }
            } else {
                for _ in 0..<count {
                    a0 = a0.addingProduct(Float32x16(repeating: wp[0]), load16(vp))
                    a1 = a1.addingProduct(Float32x16(repeating: wp[w1]), load16(vp + v1))
                    a2 = a2.addingProduct(Float32x16(repeating: wp[w2]), load16(vp + v2))
                    a3 = a3.addingProduct(Float32x16(repeating: wp[w3]), load16(vp + v3))
                    wp += wi; vp += stride
                }
            }
            give(a0, out, 0 < addRows)
            if r1 < R { give(a1, out + r1 * ldo + v1, r1 < addRows) }
            if r2 < R { give(a2, out + r2 * ldo + v2, r2 < addRows) }
            if r3 < R { give(a3, out + r3 * ldo + v3, r3 < addRows) }
        }

        @inline(__always)
        static func give(_ v: Float32x16, _ p: UnsafeMutablePointer<Float>, _ add: Bool) {
            store16(add ? v + load16(p) : v, p)
        }

        /// The first n (≤ 16, or all 16) lanes of v to p.
        @inline(__always)
        static func put(_ v: Float32x16, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
            if n >= 16 { store16(v, p); return }
            gen_store_first16(p, v, n)
        }
    }

    /// Whether heads of hs floats over contexts of T take their products in registers
    /// (`Direct`) rather than on sgemm.
    public static func productsInRegisters(hs: Int, T: Int) -> Bool { Direct.handles(hs: hs, T: T) }

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
                combine(out + h * hs, row, values)
            }
        }

        /// o (hs) = Σ_t2 p[t2]·values[t2], up to four vectors of o summed in registers over all
        /// the keys: the sums `axpy` made key after key in memory, in the same order (the same
        /// bits), without a store and a load of o per key.
        @inline(__always)
        func combine(_ o: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, _ values: UnsafePointer<Float>) {
            var c = 0
            while c + 16 <= hs {
                let w = min(4, (hs - c) / 16)
                var a0 = Float32x16(), a1 = a0, a2 = a0, a3 = a0
                var v = values + c
                for t2 in 0..<n {
                    let pv = Float32x16(repeating: p[t2])
                    a0 = a0.addingProduct(pv, load16(v))
                    if w > 1 { a1 = a1.addingProduct(pv, load16(v + 16)) }
                    if w > 2 { a2 = a2.addingProduct(pv, load16(v + 32)) }
                    if w > 3 { a3 = a3.addingProduct(pv, load16(v + 48)) }
                    v += stride
                }
                store16(a0, o + c)
                if w > 1 { store16(a1, o + c + 16) }
                if w > 2 { store16(a2, o + c + 32) }
                if w > 3 { store16(a3, o + c + 48) }
                c += 16 * w
            }
            guard c < hs else { return }
            (o + c).update(repeating: 0, count: hs - c)
            for t2 in 0..<n { axpy(p[t2], values + t2 * stride + c, o + c, hs - c) }
        }
    }
}
