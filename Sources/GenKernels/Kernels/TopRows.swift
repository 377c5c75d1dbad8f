import CSystem

/// The k largest entries of y (N) = W (N,K) · x (K), exact, reading an 8-bit copy of W and
/// only a few of its fp32 rows: greedy decoding and top-k sampling use nothing else of the
/// output layer, whose rows are most of what a small model reads per token.
///
/// The screen: W in 8 bits as `Int8Blocks` stores it (one scale s per block of 64 values, each
/// value off by at most s/2), and x rounded to 8 bits per block likewise (scale t, off by at
/// most t/2), so that a row's approximation a = Σ s·t·Σ q_w·q_x is exact integer products
/// (`gen_screen_row`: AVX-512 VNNI where the CPU has it). For each row
///     |exact − a| ≤ e = Σ_blocks s·(f·Σ|x| + g·t·Σ|q_w|),
/// f = 0.52 + K·2⁻¹⁵ covering W's rounding (1/2) and the fp32 rounding of both products, and
/// g = 0.51 x's rounding. A row whose a + e is below the k-th largest a − e cannot be among the
/// k largest; every other row is computed from its fp32 row with `Matmul.dot(row:)`, the bits
/// `vectorForwardTransposed` gives, and the rest are set to −∞. So the k largest entries, their
/// order and their values are those of the full product.

public enum TopRows {
    /// Floats of scratch `forward` needs for k.
    public static func scratchCount(K: Int, N: Int, k: Int) -> Int {
        N + approximateScratchCount(K: K) + max(k, Largest.scratchCount)
    }

    /// Floats of scratch `approximate` needs.
    public static func approximateScratchCount(K: Int) -> Int {
        4 * Int8Blocks.blocks(K: K) + Int8Blocks.rowBytes(K: K) / 4
    }

    /// Writes y as described above (the rows not computed are −∞). `weight` is (N,K), one row
    /// per output; q and scales its 8-bit copy (`Int8Blocks.quantize(rowsOf:)` with
    /// `roundingWeights: false`), absSums its Σ|q| per block (`quantize`'s `absSums`); 1 ≤ k ≤ N.
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, absSums: UnsafePointer<Float>,
                               K: Int, N: Int, k: Int, scratch: UnsafeMutablePointer<Float>) {
        precondition(k >= 1 && k <= N)
        let bound = scratch, heap = scratch + N + approximateScratchCount(K: K)
        if k == 1 {
            let screen = prepare(x, K: K, scratch: scratch + N)
            if largest(y, bound: bound, x, weight: weight, q: q, scales: scales, absSums: absSums, screen: screen,
                       K: K, N: N, lists: heap) { return }
        } else {
            approximate(y, bound: bound, x, q: q, scales: scales, absSums: absSums, K: K, N: N, scratch: scratch + N)
        }
        let floor = kthLargestLower(y, bound, N: N, k: k, heap: heap)
        Parallel.forRanges((N + 3) / 4, minimumPerThread: 8,
                           Exact(y: y, x: x, weight: weight, bound: bound, floor: floor, K: K, N: N))
    }

    /// The screen alone: each row's approximation y (N) and its bound (N), |W·x − y| ≤ bound
    /// row by row (the exact product's bits are `Matmul.dot(row:)`'s, for any row one needs).
    /// Plain sampling reads nothing else of the output layer but the rows it draws.
    /// `fetchingAhead`: whether the rows are fetched two groups ahead (and, without VNNI, taken
    /// four at a time); nil for `fetchesAhead` (a test asks for each path).
    public static func approximate(_ y: UnsafeMutablePointer<Float>, bound: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                   q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, absSums: UnsafePointer<Float>,
                                   K: Int, N: Int, scratch: UnsafeMutablePointer<Float>,
                                   fetchingAhead: Bool? = nil) {
        let screen = prepare(x, K: K, scratch: scratch)
        Parallel.forRanges((N + 3) / 4, minimumPerThread: 8,
                           Approximate(q: q, scales: scales, absSums: absSums, screen: screen, N: N, y: y, bound: bound,
                                       fetchingAhead: fetchingAhead ?? fetchesAhead))
    }

    /// Whether the screen fetches its rows two groups of four ahead: on every CPU. Measured
    /// where VNNI's path runs: an Intel Xeon's decoding gained 8% with the four rows and these
    /// fetches together, an AMD EPYC Zen 4's greedy decoding 1.1–1.2× with the fetches alone
    /// (the screen's share of a GPT-2 124M token 18–20% → 10%, about its share of the bytes
    /// read); without VNNI, an Intel Xeon's AVX2 build preferred them, a Zen 4's was even.
    static let fetchesAhead = true

    /// x rounded to 8 bits per block and the per-block terms of the screen's estimates and
    /// bounds, in `approximateScratchCount(K:)` floats of scratch.
    struct Input {
        let xq: UnsafePointer<Int8>
        let t, xTerm, qTerm, offset: UnsafePointer<Float>
        let nb, stride: Int
    }

    static func prepare(_ x: UnsafePointer<Float>, K: Int, scratch: UnsafeMutablePointer<Float>) -> Input {
        let nb = Int8Blocks.blocks(K: K), stride = Int8Blocks.rowBytes(K: K)
        let xTerm = scratch, qTerm = xTerm + nb, offset = qTerm + nb, t = offset + nb
        let xq = UnsafeMutableRawPointer(t + nb).bindMemory(to: Int8.self, capacity: stride)
        // x in 8 bits per block, laid out as the rows are; each block's terms of the bound, and
        // of the 128 the rows' bytes carry (Σ 128·q_x·t).
        let f = 0.52 + Float(K) * 0x1p-15, g: Float = 0.51
        for i in 0..<stride { xq[i] = 0 }
        for b in 0..<nb {
            let range = (b * Int8Blocks.block)..<min(K, (b + 1) * Int8Blocks.block)
            var amax: Float = 0, absolute: Float = 0
            for i in range { amax = max(amax, abs(x[i])); absolute += abs(x[i]) }
            let scale = amax / 127, inverse: Float = scale > 0 ? 1 / scale : 0
            var total = 0
            for i in range {
                let v = Int((x[i] * inverse).rounded())
                xq[Int8Blocks.slot(i, K: K)] = Int8(v)
                total += v
            }
            t[b] = scale
            xTerm[b] = f * absolute
            qTerm[b] = g * scale
            offset[b] = 128 * scale * Float(total)
        }
        return Input(xq: xq, t: t, xTerm: xTerm, qTerm: qTerm, offset: offset, nb: nb, stride: stride)
    }

    /// The k-th largest of y − bound (a min-heap of the k largest seen; most entries leave
    /// at one comparison with its root).
    static func kthLargestLower(_ y: UnsafePointer<Float>, _ bound: UnsafePointer<Float>, N: Int, k: Int,
                                heap: UnsafeMutablePointer<Float>) -> Float {
        if k == 1 { return largestLower(y, bound, 0..<N, above: -.infinity) }
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

    /// The largest of e and y − bound over `rows`.
    @inline(__always)
    static func largestLower(_ y: UnsafePointer<Float>, _ bound: UnsafePointer<Float>, _ rows: Range<Int>, above e: Float) -> Float {
        var m = Float32x16(repeating: e)
        var n = rows.lowerBound
        while n + 16 <= rows.upperBound {
            let v = load16(y + n) - load16(bound + n)
            m = m.replacing(with: v, where: v .> m)
            n += 16
        }
        var best = m.max()
        while n < rows.upperBound { best = max(best, y[n] - bound[n]); n += 1 }
        return best
    }

    /// Each row's approximation and bound, four rows to a group.
    struct Approximate: RangeKernel {
        let q: UnsafePointer<UInt8>
        let scales, absSums: UnsafePointer<Float>
        let screen: Input
        let N: Int
        let y, bound: UnsafeMutablePointer<Float>
        let fetchingAhead: Bool

        init(q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, absSums: UnsafePointer<Float>, screen: Input, N: Int,
             y: UnsafeMutablePointer<Float>, bound: UnsafeMutablePointer<Float>, fetchingAhead: Bool) {
            self.q = UnsafeRawPointer(q).assumingMemoryBound(to: UInt8.self)   // the C kernel's bytes
            (self.scales, self.absSums, self.screen, self.N, self.y, self.bound) = (scales, absSums, screen, N, y, bound)
            self.fetchingAhead = fetchingAhead
        }

        func run(_ groups: Range<Int>) { rows(groups.lowerBound * 4, min(N, groups.upperBound * 4)) }

        @inline(__always) func rows(_ n0: Int, _ n1: Int) {
            let s = screen
            gen_screen_rows(q, s.xq, scales, absSums, s.t, s.xTerm, s.qTerm, s.offset, s.nb, s.stride,
                            n0, n1, y, bound, fetchingAhead ? 1 : 0)
        }
    }

    /// k = 1 of `forward` without its two passes over all N estimates after the screen (the
    /// largest lower end, then the rows that reach it): each thread's part of the rows keeps,
    /// as it goes, the largest lower end e so far and the rows whose upper end reaches it, and
    /// sets the others to −∞ (their upper end is below e, so below the largest lower end of all).
    /// Of the rows kept, those whose upper end reaches the largest lower end of every part are
    /// computed from fp32, the others set to −∞: `forward`'s result. Returns false when a part
    /// kept more rows than its list holds (estimates that rise row after row) or none (estimates
    /// not finite): `forward` then takes its two passes over the estimates, of which only rows
    /// below the largest lower end are −∞ (which those passes would rule out as well).
    static func largest(_ y: UnsafeMutablePointer<Float>, bound: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                        weight: UnsafePointer<Float>, q: UnsafePointer<Int8>, scales: UnsafePointer<Float>,
                        absSums: UnsafePointer<Float>, screen: Input, K: Int, N: Int,
                        lists: UnsafeMutablePointer<Float>) -> Bool {
        let parts = min(Parallel.threads, Largest.parts, max(1, N / 256))
        let kernel = Largest(screen: Approximate(q: q, scales: scales, absSums: absSums, screen: screen, N: N, y: y, bound: bound,
                                                 fetchingAhead: fetchesAhead),
                             parts: parts, lists: lists)
        Parallel.forRanges(parts, kernel)
        var floor = -Float.infinity
        for p in 0..<parts {
            let count = kernel.count(p)
            guard count > 0 && count <= Largest.capacity else { return false }
            floor = max(floor, kernel.largestLower(p))
        }
        for p in 0..<parts {
            let rows = kernel.rows(p)
            for i in 0..<kernel.count(p) {
                let n = Int(rows[i])
                y[n] = y[n] + bound[n] >= floor ? Matmul.dot(row: weight + n * K, x, K: K) : -.infinity
            }
        }
        return true
    }

    /// `largest`'s parts: each writes its largest lower end, its count of kept rows (more than
    /// `capacity`: too many) and their indices into its own `stride` floats of `lists`.
    struct Largest: RangeKernel {
        static let parts = 64, capacity = 509, stride = capacity + 3
        static let scratchCount = parts * stride
        let screen: Approximate
        let parts: Int
        let lists: UnsafeMutablePointer<Float>

        func largestLower(_ p: Int) -> Float { lists[p * Self.stride] }
        func count(_ p: Int) -> Int { Int(lists[p * Self.stride + 1]) }
        func rows(_ p: Int) -> UnsafeMutablePointer<Int32> {
            UnsafeMutableRawPointer(lists + p * Self.stride + 3).assumingMemoryBound(to: Int32.self)
        }

        func run(_ range: Range<Int>) {
            let N = screen.N, y = screen.y, bound = screen.bound
            for p in range {
                // Rows in groups of four, 64 at a time: each run's estimates in cache when read.
                let groups = (N + 3) / 4
                let n0 = groups * p / parts * 4, n1 = min(N, groups * (p + 1) / parts * 4)
                let list = rows(p)
                var count = 0
                var e = -Float.infinity
                var n = n0
                while n < n1 {
                    let end = min(n1, n + 64)
                    screen.rows(n, end)
                    e = TopRows.largestLower(y, bound, n..<end, above: e)
                    let top = Float32x16(repeating: e)
                    @inline(__always) func keep(_ i: Int) {
                        if count < Self.capacity { list[count] = Int32(i) }
                        count += 1
                    }
                    var i = n
                    while i + 16 <= end {
                        let estimate = load16(y + i), kept = estimate + load16(bound + i) .>= top
                        store16(Float32x16(repeating: -.infinity).replacing(with: estimate, where: kept), y + i)
                        if any(kept) { for j in 0..<16 where kept[j] { keep(i + j) } }
                        i += 16
                    }
                    while i < end {
                        if y[i] + bound[i] >= e { keep(i) } else { y[i] = -.infinity }
                        i += 1
                    }
                    n = end
                }
                lists[p * Self.stride] = e
                lists[p * Self.stride + 1] = Float(min(count, Self.capacity + 1))
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
