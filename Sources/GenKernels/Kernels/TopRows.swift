/// The k largest entries of y (N) = W (N,K) · x (K), exact, reading an 8-bit copy of W and
/// only a few of its fp32 rows: greedy decoding and top-k sampling use nothing else of the
/// output layer, whose rows are most of what a small model reads per token.
///
/// The 8-bit copy (`Int8Blocks`, one scale s per block of 64 values, each value off by at
/// most s/2) gives every entry an approximation a and a bound e with |exact − a| ≤ e, where
/// e = f · Σ_blocks s·Σ|x| over the block (f covers the rounding to 8 bits, 1/2, and the fp32
/// rounding of both products, far under 0.02 + K·2⁻¹⁵). An entry whose a + e is below the
/// k-th largest a − e cannot be among the k largest; every other entry is computed from its
/// fp32 row with `Matmul.dot(row:)`, the bits `vectorForwardTransposed` gives, and the rest
/// are set to −∞. So the k largest entries, their order and their values are those of the
/// full product.
public enum TopRows {
    /// Floats of scratch `forward` needs for k: a bound per row, a sum per block, a heap of k.
    public static func scratchCount(K: Int, N: Int, k: Int) -> Int { N + Int8Blocks.blocks(K: K) + k }

    /// Writes y as described above (the rows not computed are −∞). `weight`
    /// is (N,K), one row per output; q and scales its 8-bit copy (`Int8Blocks.quantize(rowsOf:)`
    /// with `roundingWeights: false`); 1 ≤ k ≤ N.
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, K: Int, N: Int, k: Int,
                               scratch: UnsafeMutablePointer<Float>) {
        precondition(k >= 1 && k <= N)
        BLAS.keepSingleThreaded()
        let nb = Int8Blocks.blocks(K: K)
        let bound = scratch, sums = scratch + N, heap = sums + nb
        // Σ|x| per block of 64
        for b in 0..<nb {
            var t: Float = 0
            for i in (b * Int8Blocks.block)..<min(K, (b + 1) * Int8Blocks.block) { t += abs(x[i]) }
            sums[b] = t
        }
        let factor = 0.52 + Float(K) * 0x1p-15
        let groups = (N + 3) / 4
        let rows = Int8Blocks.Rows(y: y, x: x, q: q, scales: scales, bias: nil, K: K, N: N)
        Parallel.forRanges(groups, minimumPerThread: 8,
                           Approximate(rows: rows, bound: bound, sums: sums, scales: scales, factor: factor, nb: nb, N: N))
        let floor = kthLargestLower(y, bound, N: N, k: k, heap: heap)
        Parallel.forRanges(groups, minimumPerThread: 8,
                           Exact(y: y, x: x, weight: weight, bound: bound, floor: floor, K: K, N: N))
    }

    /// The k-th largest of y − bound (a min-heap of the k largest seen; most entries leave
    /// at one comparison with its root).
    static func kthLargestLower(_ y: UnsafePointer<Float>, _ bound: UnsafePointer<Float>, N: Int, k: Int,
                                heap: UnsafeMutablePointer<Float>) -> Float {
        if k == 1 {
            var m = Float32x16(repeating: -.infinity)
            var n = 0
            while n + 16 <= N {
                let v = load16(y + n) - load16(bound + n)
                m = m.replacing(with: v, where: v .> m)
                n += 16
            }
            var best = m.max()
            while n < N { best = max(best, y[n] - bound[n]); n += 1 }
            return best
        }
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var least = i
                if l < k && heap[l] < heap[least] { least = l }
                if r < k && heap[r] < heap[least] { least = r }
                if least == i { return }
                let t = heap[i]; heap[i] = heap[least]; heap[least] = t
                i = least
            }
        }
        for i in 0..<k { heap[i] = y[i] - bound[i] }
        for i in stride(from: k / 2 - 1, through: 0, by: -1) { siftDown(i) }
        for n in k..<N {
            let v = y[n] - bound[n]
            if v > heap[0] { heap[0] = v; siftDown(0) }
        }
        return heap[0]
    }

    /// The 8-bit product for groups of four rows, then each row's bound.
    struct Approximate: RangeKernel {
        let rows: Int8Blocks.Rows
        let bound, sums, scales: UnsafePointer<Float>
        let factor: Float
        let nb, N: Int

        func run(_ groups: Range<Int>) {
            rows.run(groups)
            let b = UnsafeMutablePointer(mutating: bound)
            for n in (groups.lowerBound * 4)..<min(N, groups.upperBound * 4) {
                let s = scales + n * nb
                var e: Float = 0
                for j in 0..<nb { e += s[j] * sums[j] }
                b[n] = factor * e
            }
        }
    }

    /// Rows whose approximation plus bound reaches `floor` from fp32, the rest −∞.
    struct Exact: RangeKernel {
        let y: UnsafeMutablePointer<Float>
        let x, weight, bound: UnsafePointer<Float>
        let floor: Float
        let K, N: Int

        func run(_ groups: Range<Int>) {
            for n in (groups.lowerBound * 4)..<min(N, groups.upperBound * 4) {
                y[n] = y[n] + bound[n] >= floor ? Matmul.dot(row: weight + n * K, x, K: K) : -.infinity
            }
        }
    }
}
