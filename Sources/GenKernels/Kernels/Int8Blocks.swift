import CSystem

/// Weights in 8 bits for decoding: each row of K values is cut into blocks of 64, and a block
/// is stored as 64 bytes and one Float scale s, the value being q·s (s = max|w|/127, q = w/s
/// rounded to nearest, -127…127): 1.0625 bytes a weight, as llama.cpp's Q8_0 (32 bytes and an
/// fp16 scale). A byte holds q + 128, so that placed in the top of a float's mantissa it reads
/// as 1.5 + q/256: one shift and one mask make it a float, and the 1.5 is taken off once per
/// block for all rows. A row's bytes are padded to a multiple of 32. Decoding reads a little
/// over a quarter of the bytes of fp32.
public enum Int8Blocks {
    /// Values that share one scale.
    public static let block = 64

    /// Blocks (scales) in a row of K values.
    public static func blocks(K: Int) -> Int { (K + block - 1) / block }

    /// Bytes of a row of K values: K rounded up to a multiple of 32.
    public static func rowBytes(K: Int) -> Int { (K + 31) / 32 * 32 }

    /// Where value k of a row is stored: in whole blocks of 64 values, byte 4i+j holds value
    /// 16j+i, so that one 64-byte load gives four 16-lane vectors by shifts; 32 values after
    /// the whole blocks (when as many are left) likewise in 8 lanes (byte 4i+j holds value
    /// 8j+i); the values after them in order.
    @inline(__always)
    static func slot(_ k: Int, K: Int) -> Int {
        let groups = K / 64 * 64
        if k < groups {
            let g = k / 64 * 64, r = k - g
            return g + 4 * (r % 16) + r / 16
        }
        if K - groups >= 32 && k < groups + 32 {
            let r = k - groups
            return groups + 4 * (r % 8) + r / 8
        }
        return k
    }

    /// Quantizes the N rows of a weight stored (K,N) (row n is column n: element (n,k) at
    /// w[k·N + n]) into q (N, rowBytes) and scales (N, blocks), and (`roundingWeights`)
    /// writes each value's rounded q·s back into w, so that a pass through w computes what a
    /// pass through q does; else w is only read. Walks w in order, a block of 64 input rows at
    /// a time, each thread over its own columns, sixteen at a time.
    public static func quantize(columnsOf w: UnsafeMutablePointer<Float>, K: Int, N: Int,
                                q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>,
                                roundingWeights: Bool = true) {
        let nb = blocks(K: K), stride = rowBytes(K: K)
        forColumnBlocks(K: K, N: N) { c0, c1, b, k0, k1 in
            var n = c0
            while n + 16 <= c1 {
                var m = SIMD16<UInt32>()
                for k in k0..<k1 { m = maxMagnitude(m, load16(w + k * N + n)) }
                let s = unsafeBitCast(m, to: Float32x16.self) / 127
                let inverse = (1 / s).replacing(with: 0, where: s .== 0)
                for i in 0..<16 { scales[(n + i) * nb + b] = s[i] }
                for k in k0..<k1 {
                    let p = w + k * N + n, at = slot(k, K: K)
                    let r = gen_round16(load16(p) * inverse)
                    if roundingWeights { store16(r * s, p) }
                    let bytes = gen_bytes16(r)
                    for i in 0..<16 { q[(n + i) * stride + at] = Int8(truncatingIfNeeded: bytes[i]) }
                }
                n += 16
            }
            for c in n..<c1 {
                scales[c * nb + b] = roundOneByOne(w + c, step: N, k0..<k1, K: K, q + c * stride, roundingWeights: roundingWeights)
            }
            if b == nb - 1 { for n in c0..<c1 { for k in K..<stride { q[n * stride + slot(k, K: K)] = Int8(bitPattern: 128) } } }
        }
    }

    /// The walk of a (K,N) weight's columns that `quantize(columnsOf:)` and
    /// `dequantize(columnsInto:)` share: each thread over its own columns, 64 at a time
    /// (c0..<c1), a block of 64 input rows (b, k0..<k1) after another.
    @inline(__always)
    static func forColumnBlocks(K: Int, N: Int, _ body: (_ c0: Int, _ c1: Int, _ b: Int, _ k0: Int, _ k1: Int) -> Void) {
        Parallel.forRanges((N + 63) / 64) { chunks in
            let c0 = chunks.lowerBound * 64, c1 = min(N, chunks.upperBound * 64)
            for b in 0..<blocks(K: K) { body(c0, c1, b, b * block, min(K, b * block + block)) }
        }
    }

    /// The weight `quantize(columnsOf:)` rounded, rebuilt from q and scales into w (K,N): each
    /// value q·s, as it wrote back (a zero's sign aside). Each thread over its own columns,
    /// sixteen at a time, a block of 64 input rows after another (the sixteen rows' bytes stay
    /// in cache).
    public static func dequantize(columnsInto w: UnsafeMutablePointer<Float>, K: Int, N: Int,
                                  q: UnsafePointer<Int8>, scales: UnsafePointer<Float>) {
        let nb = blocks(K: K), stride = rowBytes(K: K)
        let bytes = UnsafeRawPointer(q).assumingMemoryBound(to: UInt8.self)
        forColumnBlocks(K: K, N: N) { c0, c1, b, k0, k1 in
            var n = c0
            while n + 16 <= c1 {
                var s = Float32x16()
                for i in 0..<16 { s[i] = scales[(n + i) * nb + b] }
                for k in k0..<k1 {
                    let at = slot(k, K: K)
                    var v = SIMD16<Int32>()
                    for i in 0..<16 { v[i] = Int32(bytes[(n + i) * stride + at]) }
                    store16(Float32x16(v &- 128) * s, w + k * N + n)
                }
                n += 16
            }
            for c in n..<c1 {
                let s = scales[c * nb + b]
                for k in k0..<k1 { w[k * N + c] = Float(Int(bytes[c * stride + slot(k, K: K)]) - 128) * s }
            }
        }
    }

    /// The same for a weight stored (N,K), one row per output (the tied embedding): a whole
    /// block as four vectors, stored as `slot` lays it out with one 64-byte store, and a last
    /// part block likewise from vectors read under a mask (its 32 values in 8 lanes, as `slot`
    /// lays them out, with one 32-byte store). With `roundingWeights` false, w is only read (an
    /// 8-bit copy beside fp32 weights). With `absSums`, each block's Σ|q| too (N, blocks): the
    /// screen's third array (`TopRows`).
    public static func quantize(rowsOf w: UnsafeMutablePointer<Float>, K: Int, N: Int,
                                q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>,
                                roundingWeights: Bool = true, absSums: UnsafeMutablePointer<Float>? = nil) {
        let nb = blocks(K: K), stride = rowBytes(K: K)
        Parallel.forRanges(N, minimumPerThread: 64) { rows in
            for n in rows {
                let row = w + n * K, qRow = q + n * stride
                for k in K..<stride { qRow[slot(k, K: K)] = Int8(bitPattern: 128) }
                var b = 0
                while (b + 1) * block <= K {
                    let p = row + b * block
                    let v0 = load16(p), v1 = load16(p + 16), v2 = load16(p + 32), v3 = load16(p + 48)
                    let m = maxMagnitude(maxMagnitude(maxMagnitude(maxMagnitude(SIMD16<UInt32>(), v0), v1), v2), v3)
                    let s = Float(bitPattern: m.max()) / 127
                    let inverse: Float = s > 0 ? 1 / s : 0
                    scales[n * nb + b] = s
                    let r0 = gen_round16(v0 * inverse), r1 = gen_round16(v1 * inverse)
                    let r2 = gen_round16(v2 * inverse), r3 = gen_round16(v3 * inverse)
                    if roundingWeights {
                        store16(r0 * s, p); store16(r1 * s, p + 16); store16(r2 * s, p + 32); store16(r3 * s, p + 48)
                    }
                    UnsafeMutableRawPointer(qRow + b * block).storeBytes(of: gen_pack_bytes16(r0, r1, r2, r3), as: SIMD16<UInt32>.self)
                    absSums?[n * nb + b] = gen_absolute_sum64(r0, r1, r2, r3)
                    b += 1
                }
                guard b < nb else { continue }
                // The last block's r values (1 to 63), the lanes past them read as 0.
                let k0 = b * block, r = K - k0, p = row + k0
                func part(_ j: Int) -> Float32x16 { gen_load_first16(p + 16 * j, max(0, min(16, r - 16 * j)), 0) }
                let v0 = part(0), v1 = part(1), v2 = part(2), v3 = part(3)
                let m = maxMagnitude(maxMagnitude(maxMagnitude(maxMagnitude(SIMD16<UInt32>(), v0), v1), v2), v3)
                let s = Float(bitPattern: m.max()) / 127
                let inverse: Float = s > 0 ? 1 / s : 0
                scales[n * nb + b] = s
                // Σ|q| as the values are rounded (small integers: exact in any order).
                var absolute: Float = 0
                var k = k0
                if r >= 32 {   // value 8j+i of the 32 in byte 4i+j: lane i of the j-th run of 8
                    let u0 = gen_round16(gen_load_first16(p, 8, 0) * inverse), u1 = gen_round16(gen_load_first16(p + 8, 8, 0) * inverse)
                    let u2 = gen_round16(gen_load_first16(p + 16, 8, 0) * inverse), u3 = gen_round16(gen_load_first16(p + 24, 8, 0) * inverse)
                    UnsafeMutableRawPointer(qRow + k0).storeBytes(of: gen_pack_bytes16(u0, u1, u2, u3).lowHalf, as: SIMD8<UInt32>.self)
                    if roundingWeights {
                        gen_store_first16(p, u0 * s, 8); gen_store_first16(p + 8, u1 * s, 8)
                        gen_store_first16(p + 16, u2 * s, 8); gen_store_first16(p + 24, u3 * s, 8)
                    }
                    absolute = gen_absolute_sum64(u0, u1, u2, u3)
                    k += 32
                }
                while k < K {   // the rest in order
                    let v = (row[k] * inverse).rounded()
                    qRow[k] = Int8(bitPattern: UInt8(v + 128))
                    if roundingWeights { row[k] = v * s }
                    absolute += abs(v)
                    k += 1
                }
                absSums?[n * nb + b] = absolute
            }
        }
    }

    /// Rounds values `ks` of one row, value k at w[k·step], one at a time (a block that the
    /// vector paths do not take): writes their bytes into qRow where `slot` puts them and
    /// (`roundingWeights`) the rounded values back into w; returns the block's scale.
    @inline(__always)
    static func roundOneByOne(_ w: UnsafeMutablePointer<Float>, step: Int, _ ks: Range<Int>, K: Int,
                              _ qRow: UnsafeMutablePointer<Int8>, roundingWeights: Bool = true) -> Float {
        var amax: Float = 0
        for k in ks { amax = max(amax, abs(w[k * step])) }
        let s = amax / 127, inverse: Float = s > 0 ? 1 / s : 0
        for k in ks {
            let v = (w[k * step] * inverse).rounded()
            qRow[slot(k, K: K)] = Int8(bitPattern: UInt8(v + 128))
            if roundingWeights { w[k * step] = v * s }
        }
        return s
    }

    /// The larger of m and the magnitudes of v, lane by lane, as bit patterns (which order
    /// non-negative floats as their values do).
    @inline(__always)
    static func maxMagnitude(_ m: SIMD16<UInt32>, _ v: Float32x16) -> SIMD16<UInt32> {
        let a = unsafeBitCast(v, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF
        return m.replacing(with: a, where: a .> m)
    }

    /// Row n of a weight stored (N,K) in 8 bits (`quantize(rowsOf:)`), rebuilt in out (K): each
    /// value q·s, the value rounding wrote back (a zero's sign aside). Whole 64-value blocks as
    /// four vectors: (1.5 + q/256 − 1.5)·256 is q exactly.
    @inline(__always)
    public static func dequantize(row n: Int, q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, K: Int,
                                  into out: UnsafeMutablePointer<Float>) {
        let nb = blocks(K: K), stride = rowBytes(K: K)
        let qRow = q + n * stride, sRow = scales + n * nb
        var k = 0
        while k + 64 <= K {
            let (f0, f1, f2, f3) = load64(qRow + k)
            let s = Float32x16(repeating: sRow[k / 64])
            store16((f0 - 1.5) * 256 * s, out + k); store16((f1 - 1.5) * 256 * s, out + k + 16)
            store16((f2 - 1.5) * 256 * s, out + k + 32); store16((f3 - 1.5) * 256 * s, out + k + 48)
            k += 64
        }
        let bytes = UnsafeRawPointer(qRow).assumingMemoryBound(to: UInt8.self)
        while k < K { out[k] = Float(Int(bytes[slot(k, K: K)]) - 128) * sRow[k / 64]; k += 1 }
    }

    /// out (B,T,C) = the token embeddings' rows of `tokens`, stored in 8 bits (V,C), rebuilt
    /// (`dequantize(row:)`), + wpe (maxT,C): what `Embedding.forward` gives from the rounded
    /// fp32 rows.
    public static func embed(_ out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>,
                             q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, wpe: UnsafePointer<Float>,
                             B: Int, T: Int, C: Int) {
        Parallel.forRanges(B * T, minimumPerThread: 64) { rows in
            for r in rows {
                let o = out + r * C, p = wpe + (r % T) * C
                dequantize(row: Int(tokens[r]), q: q, scales: scales, K: C, into: o)
                var c = 0
                while c + 16 <= C { store16(load16(o + c) + load16(p + c), o + c); c += 16 }
                while c < C { o[c] = o[c] + p[c]; c += 1 }
            }
        }
    }

    /// y (N) = W (N,K) · x (K) for W stored in 8 bits (`quantize(rowsOf:)`), each row rebuilt
    /// in fp32 and multiplied as `Matmul.vectorForwardTransposed` multiplies it: the bits of
    /// that product over the rounded fp32 rows (not `vectorForward`'s, which multiplies the
    /// bytes). For a prompt's last position when those rows are kept in 8 bits alone.
    public static func vectorForwardRounded(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                            q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, K: Int, N: Int) {
        Parallel.forRanges((N + 63) / 64) { groups in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: K) { row in
                for n in (groups.lowerBound * 64)..<min(N, groups.upperBound * 64) {
                    dequantize(row: n, q: q, scales: scales, K: K, into: row.baseAddress!)
                    y[n] = Matmul.dot(row: row.baseAddress!, x, K: K)
                }
            }
        }
    }

    /// out (M,N) = x (M,K) · Wᵀ for W (N,K) stored in 8 bits (`quantize(rowsOf:)`): blocks of
    /// W's rows rebuilt (`dequantize(row:)`) in `scratch` (room for `capacity` floats, at least
    /// K) and multiplied by the sgemm `Matmul.forwardTransposed` runs, into out's columns of the
    /// block: the product over the rounded fp32 rows. For every position's logits when the
    /// embeddings are kept in 8 bits alone.
    public static func forwardTransposedRebuilt(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                                q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, M: Int, K: Int, N: Int,
                                                scratch: UnsafeMutablePointer<Float>, capacity: Int) {
        precondition(capacity >= K)
        let rows = capacity / K
        var n0 = 0
        while n0 < N {
            let n = min(rows, N - n0), first = n0
            Parallel.forRanges(n, minimumPerThread: 64) { r in
                for i in r { dequantize(row: first + i, q: q, scales: scales, K: K, into: scratch + i * K) }
            }
            Matmul.product(transA: false, transB: true, M: M, N: n, K: K, x, lda: K, scratch, ldb: K, beta: 0, out + n0, ldc: N)
            n0 += n
        }
    }

    /// y (N) = bias (N) + W (N,K) · x (K), W the dequantized rows of q and scales as
    /// `quantize` wrote them. Split across the pool by groups of four rows.
    public static func vectorForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                     q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                     K: Int, N: Int) {
        let groups = (N + 3) / 4
        Parallel.forRanges(groups, minimumPerThread: K * N >= 1 << 15 ? 8 : 1 << 30,
                           Rows(y: y, x: x, q: q, scales: scales, bias: bias, K: K, N: N))
    }

    /// The 64 bytes at p, stored interleaved by `quantize` (byte 4i+j holds value 16j+i of the
    /// group), as four vectors of 1.5 + q/256 for values 0–15, 16–31, 32–47 and 48–63: each
    /// byte shifted into bits 15–22 of its 32-bit lane, under the exponent of 1.
    @inline(__always)
    static func load64(_ p: UnsafePointer<Int8>) -> (Float32x16, Float32x16, Float32x16, Float32x16) {
        let v = UnsafeRawPointer(p).loadUnaligned(as: SIMD16<UInt32>.self)
        let mask = SIMD16<UInt32>(repeating: 0x007F_8000), one = SIMD16<UInt32>(repeating: 0x3F80_0000)
        @inline(__always) func float(_ i: SIMD16<UInt32>) -> Float32x16 { unsafeBitCast((i & mask) | one, to: Float32x16.self) }
        return (float(v &<< 15), float(v &<< 7), float(v &>> 1), float(v &>> 9))
    }

    /// 32 bytes stored as `slot` lays out 32 values after the whole blocks (byte 4i+j holds value 8j+i), as
    /// four 8-lane vectors of 1.5 + q/256.
    @inline(__always)
    static func load32(_ p: UnsafePointer<Int8>) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let v = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt32>.self)
        let mask = SIMD8<UInt32>(repeating: 0x007F_8000), one = SIMD8<UInt32>(repeating: 0x3F80_0000)
        @inline(__always) func float(_ i: SIMD8<UInt32>) -> SIMD8<Float> { unsafeBitCast((i & mask) | one, to: SIMD8<Float>.self) }
        return (float(v &<< 15), float(v &<< 7), float(v &>> 1), float(v &>> 9))
    }

    /// Whether `vectorForward` fetches the rows ahead into every cache level (Intel's CPUs) or
    /// marked non-temporal (AMD's, where that was the faster; on an Intel Xeon the non-temporal
    /// fetches left the kernel at less than half the speed of the plain ones).
    static let temporalPrefetch = gen_cpu_is_intel() != 0

    struct Rows: RangeKernel {
        let y: UnsafeMutablePointer<Float>
        let x: UnsafePointer<Float>
        let q: UnsafePointer<Int8>
        let scales: UnsafePointer<Float>
        let bias: UnsafePointer<Float>?
        let K, N: Int

        func run(_ range: Range<Int>) {
            let nb = Int8Blocks.blocks(K: K), stride = Int8Blocks.rowBytes(K: K)
            for g in range {
                let n0 = g * 4
                if n0 + 4 <= N {
                    four(n0, nb: nb, stride: stride)
                } else {
                    for n in n0..<N { y[n] = rest(q + n * stride, scales + n * nb, from: 0) + (bias?[n] ?? 0) }
                }
            }
        }

        /// Rows n0..<n0+4, sharing each group of x between them.
        @inline(__always)
        func four(_ n0: Int, nb: Int, stride: Int) {
            let q0 = q + n0 * stride, q1 = q0 + stride, q2 = q1 + stride, q3 = q2 + stride
            let s0 = scales + n0 * nb, s1 = s0 + nb, s2 = s1 + nb, s3 = s2 + nb
            var a0 = Float32x16(), a1 = Float32x16(), a2 = Float32x16(), a3 = Float32x16()
            let groups = K / 64
            // The four rows are one run of 4·stride bytes; fetch the run two groups of rows on,
            // four lines per step, so that it is in cache when they come.
            let ahead = UnsafeRawPointer(q0 + 8 * stride), temporal: Int32 = Int8Blocks.temporalPrefetch ? 1 : 0
            for g in 0..<groups {
                let k = g * 64
                gen_prefetch(ahead + 256 * g, temporal); gen_prefetch(ahead + 256 * g + 64, temporal)
                gen_prefetch(ahead + 256 * g + 128, temporal); gen_prefetch(ahead + 256 * g + 192, temporal)
                let x0 = load16(x + k), x1 = load16(x + k + 16), x2 = load16(x + k + 32), x3 = load16(x + k + 48)
                // Σ (1.5 + q/256)·x − 1.5·Σ x = Σ q·x / 256, per half block
                let h0 = -1.5 * (x0 + x1), h1 = -1.5 * (x2 + x3)
                @inline(__always) func add(_ a: inout Float32x16, _ qr: UnsafePointer<Int8>, _ sr: UnsafePointer<Float>) {
                    let (f0, f1, f2, f3) = load64(qr + k)
                    let scale = Float32x16(repeating: sr[g])
                    a = a.addingProduct(scale, h0.addingProduct(f0, x0).addingProduct(f1, x1))
                    a = a.addingProduct(scale, h1.addingProduct(f2, x2).addingProduct(f3, x3))
                }
                add(&a0, q0, s0); add(&a1, q1, s1); add(&a2, q2, s2); add(&a3, q3, s3)
            }
            let k = groups * 64
            let r0 = 256 * a0.sum() + rest(q0, s0, from: k), r1 = 256 * a1.sum() + rest(q1, s1, from: k)
            let r2 = 256 * a2.sum() + rest(q2, s2, from: k), r3 = 256 * a3.sum() + rest(q3, s3, from: k)
            if let bias {
                y[n0] = r0 + bias[n0]; y[n0 + 1] = r1 + bias[n0 + 1]; y[n0 + 2] = r2 + bias[n0 + 2]; y[n0 + 3] = r3 + bias[n0 + 3]
            } else {
                y[n0] = r0; y[n0 + 1] = r1; y[n0 + 2] = r2; y[n0 + 3] = r3
            }
        }

        /// One row's values from k0 (0 or the end of the 64-groups) to K.
        @inline(__always)
        func rest(_ qr: UnsafePointer<Int8>, _ sr: UnsafePointer<Float>, from k0: Int) -> Float {
            var total: Float = 0
            var k = k0
            if k == 0 {
                var a = Float32x16()
                while k + 64 <= K {
                    let (f0, f1, f2, f3) = load64(qr + k)
                    let x0 = load16(x + k), x1 = load16(x + k + 16), x2 = load16(x + k + 32), x3 = load16(x + k + 48)
                    let scale = Float32x16(repeating: sr[k / 64])
                    a = a.addingProduct(scale, (-1.5 * (x0 + x1)).addingProduct(f0, x0).addingProduct(f1, x1))
                    a = a.addingProduct(scale, (-1.5 * (x2 + x3)).addingProduct(f2, x2).addingProduct(f3, x3))
                    k += 64
                }
                total = 256 * a.sum()
            }
            if k + 32 <= K {
                let (f0, f1, f2, f3) = load32(qr + k)
                @inline(__always) func x8(_ i: Int) -> SIMD8<Float> { UnsafeRawPointer(x + k + 8 * i).loadUnaligned(as: SIMD8<Float>.self) }
                let h = -1.5 * (x8(0) + x8(1) + x8(2) + x8(3))
                let t = h.addingProduct(f0, x8(0)).addingProduct(f1, x8(1)).addingProduct(f2, x8(2)).addingProduct(f3, x8(3))
                total += 256 * t.sum() * sr[k / 64]
                k += 32
            }
            if k < K {
                var t: Float = 0
                for i in k..<K { t += (Float(UInt8(bitPattern: qr[i])) - 128) * x[i] }
                total += t * sr[k / 64]
            }
            return total
        }
    }
}
