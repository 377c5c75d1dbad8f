import Testing
import GenKit
import GenKernels

/// Each layer's backward against central finite differences of its forward. The loss is
/// Σ out·R for a random R, so the analytic input gradient is backward(dout = R). Differences
/// are taken in Float with h = 1e-2; agreement is required to 2e-2 relative (max norm), far
/// above float round-off and far below any real mistake (a wrong term gives O(1)).
@Suite struct KernelGradientTests {
    let tolerance: Float = 2e-2

    @Test(arguments: [(3, 16), (5, 37)])
    func layerNorm(M: Int, C: Int) {
        var rng = Random(seed: 1)
        var x = randomArray(M * C, &rng)
        var w = randomArray(C, &rng, scale: 0.5).map { $0 + 1 }
        let b = randomArray(C, &rng)
        let r = randomArray(M * C, &rng)
        func run(_ x: [Float], _ w: [Float]) -> (out: [Float], mean: [Float], rstd: [Float]) {
            var out = [Float](repeating: 0, count: M * C), mean = [Float](repeating: 0, count: M), rstd = mean
            LayerNorm.forward(&out, mean: &mean, rstd: &rstd, x, weight: w, bias: b, M: M, C: C)
            return (out, mean, rstd)
        }
        let f = run(x, w)
        var dx = [Float](repeating: 0, count: M * C), dw = [Float](repeating: 0, count: C), db = dw
        LayerNorm.backward(dinp: &dx, dweight: &dw, dbias: &db, dout: r, inp: x, weight: w, mean: f.mean, rstd: f.rstd, M: M, C: C)
        let numX = (0..<x.count).map { i in Float(numericGradient(&x, i, h: 1e-2) { weightedSum(run($0, w).out, r) }) }
        let numW = (0..<w.count).map { i in Float(numericGradient(&w, i, h: 1e-2) { weightedSum(run(x, $0).out, r) }) }
        let numB = (0..<C).map { c in (0..<M).reduce(Float(0)) { $0 + r[$1 * C + c] } }
        #expect(relativeError(dx, numX) < tolerance)
        #expect(relativeError(dw, numW) < tolerance)
        #expect(relativeError(db, numB) < 1e-5)
    }

    @Test func gelu() {
        var rng = Random(seed: 2)
        let n = 53
        var x = randomArray(n, &rng, scale: 2)
        let r = randomArray(n, &rng)
        func run(_ x: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n)
            GELU.forward(&out, x, count: n)
            return out
        }
        // Against the formula in Double.
        let out = run(x)
        for i in 0..<n {
            let v = Double(x[i])
            let ref = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))
            #expect(abs(Double(out[i]) - ref) < 1e-6 * max(1, abs(ref)))
        }
        var dx = [Float](repeating: 0, count: n)
        GELU.backward(dinp: &dx, dout: r, inp: x, count: n)
        let num = (0..<n).map { i in Float(numericGradient(&x, i, h: 1e-2) { weightedSum(run($0), r) }) }
        #expect(relativeError(dx, num) < tolerance)
    }

    @Test(arguments: [(4, 8, 12), (7, 19, 33)])
    func matmul(M: Int, K: Int, N: Int) {
        var rng = Random(seed: 3)
        var x = randomArray(M * K, &rng)
        var w = randomArray(K * N, &rng)
        var b = randomArray(N, &rng)
        let r = randomArray(M * N, &rng)
        func run(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: M * N)
            Matmul.forward(&out, x, w, b, M: M, K: K, N: N)
            return out
        }
        // Forward against a naive loop.
        let out = run(x, w, b)
        var naive = [Float](repeating: 0, count: M * N)
        for i in 0..<M { for j in 0..<N {
            var s = b[j]
            for k in 0..<K { s += x[i * K + k] * w[k * N + j] }
            naive[i * N + j] = s
        } }
        #expect(relativeError(out, naive) < 1e-5)
        var dx = [Float](repeating: 0, count: M * K), dw = [Float](repeating: 0, count: K * N), db = [Float](repeating: 0, count: N)
        Matmul.backward(dinp: &dx, dweight: &dw, dbias: &db, dout: r, inp: x, weight: w, M: M, K: K, N: N)
        let numX = (0..<x.count).map { i in Float(numericGradient(&x, i, h: 1e-2) { weightedSum(run($0, w, b), r) }) }
        let numW = (0..<w.count).map { i in Float(numericGradient(&w, i, h: 1e-2) { weightedSum(run(x, $0, b), r) }) }
        let numB = (0..<b.count).map { i in Float(numericGradient(&b, i, h: 1e-2) { weightedSum(run(x, w, $0), r) }) }
        #expect(relativeError(dx, numX) < tolerance)
        #expect(relativeError(dw, numW) < tolerance)
        #expect(relativeError(db, numB) < tolerance)
    }

    /// Shapes large enough that the product is split over threads (by rows, then by columns)
    /// give the same results as one sgemm call.
    @Test(arguments: [(96, 40, 48), (20, 64, 130)])
    func matmulSplitOverThreads(M: Int, K: Int, N: Int) {
        var rng = Random(seed: 13)
        let x = randomArray(M * K, &rng), w = randomArray(K * N, &rng), d = randomArray(M * N, &rng)
        func run(threads: Int) -> [[Float]] { Parallel.withThreads(threads) {
            var out = [Float](repeating: 0, count: M * N), dx = [Float](repeating: 0, count: M * K)
            var dw = [Float](repeating: 0, count: K * N), db = [Float](repeating: 0, count: N)
            Matmul.forward(&out, x, w, nil, M: M, K: K, N: N)
            Matmul.backward(dinp: &dx, dweight: &dw, dbias: &db, dout: d, inp: x, weight: w, M: M, K: K, N: N)
            var tout = [Float](repeating: 0, count: M * N), tdx = dx, tdw = [Float](repeating: 0, count: K * N)
            // Transposed forms: weight (N,K) is wᵀ.
            var wt = [Float](repeating: 0, count: N * K)
            for k in 0..<K { for n in 0..<N { wt[n * K + k] = w[k * N + n] } }
            Matmul.forwardTransposed(&tout, x, wt, M: M, K: K, N: N)
            Matmul.backwardTransposed(dinp: &tdx, dweight: &tdw, dout: d, inp: x, weight: wt, M: M, K: K, N: N)
            return [out, dx, dw, db, tout, tdx, tdw]
        } }
        let one = run(threads: 1), two = run(threads: 3)
        for (a, b) in zip(two, one) { #expect(relativeError(a, b) < 1e-6) }
        var naive = [Float](repeating: 0, count: M * N)
        for i in 0..<M { for j in 0..<N { var s: Float = 0; for k in 0..<K { s += x[i * K + k] * w[k * N + j] }; naive[i * N + j] = s } }
        #expect(relativeError(two[0], naive) < 1e-5)
        #expect(relativeError(two[4], naive) < 1e-5)
    }

    /// Every transposition of the general product, with tails of rows (M not a multiple of 12 or 6),
    /// K in several runs (over 512, and over 256 where AVX2 runs it) and in runs that are not
    /// multiples of 16 (the panels of Bᵀ then copied one value at a time), N over one block of
    /// panels (288; 544 over two where A is transposed with AVX2), C added to (beta 1) and a
    /// scale (alpha): within 1e-5 of sums in Double on 1 and 3 threads. Where gen's own product
    /// runs, every output is exactly one chain of Float FMAs over k in order, from zero or from
    /// C's value, times alpha, whatever the number of threads.
    @Test(arguments: [(37, 20, 64), (130, 515, 96), (12, 1100, 32), (25, 48, 288), (7, 40, 544)])
    func generalProduct(M: Int, K: Int, N: Int) {
        var rng = Random(seed: 21)
        for transA in [false, true] {
            for transB in [false, true] {
                for (alpha, beta): (Float, Float) in [(1, 0), (1, 1), (0.7, 0)] {
                    let a = randomArray(M * K, &rng), b = randomArray(K * N, &rng), c = randomArray(M * N, &rng)
                    let lda = transA ? M : K, ldb = transB ? K : N
                    var chain = [Float](repeating: 0, count: M * N), exact = [Float](repeating: 0, count: M * N)
                    for i in 0..<M {
                        for j in 0..<N {
                            var s: Float = beta * c[i * N + j], d = Double(s)
                            for k in 0..<K {
                                let x = transA ? a[k * M + i] : a[i * K + k], y = transB ? b[j * K + k] : b[k * N + j]
                                s.addProduct(x, y)
                                d += Double(x) * Double(y)
                            }
                            chain[i * N + j] = s * alpha
                            exact[i * N + j] = Float(d * Double(alpha))
                        }
                    }
                    for threads in [1, 3] {
                        var out = c
                        Parallel.withThreads(threads) {
                            Matmul.product(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, a, lda: lda,
                                           b, ldb: ldb, beta: beta, &out, ldc: N)
                        }
                        let what = "\(M)x\(K)x\(N) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta) threads \(threads)"
                        #expect(relativeError(out, exact) < 1e-5, "\(what)")
                        if Matmul.ownProduct {
                            let same = out == chain
                            #expect(same, "\(what): not the chain of FMAs over k in order")
                        }
                    }
                }
            }
        }
    }

    /// The projections' products with a bias (`forward`, inp · weight + bias, and
    /// `forwardTransposed`, inp · weightᵀ + bias): within 1e-5 of sums in Double on 1 and 3
    /// threads; where gen's own product runs (N a multiple of 32), each output is exactly one
    /// chain of Float FMAs over k in order starting from its column's bias, the bits of C filled
    /// with the bias and then added to. N 36 takes OpenBLAS after the fill.
    @Test(arguments: [(37, 20, 64), (130, 515, 96), (25, 48, 288), (9, 40, 36)])
    func biasedProducts(M: Int, K: Int, N: Int) {
        var rng = Random(seed: 22)
        let inp = randomArray(M * K, &rng), w = randomArray(K * N, &rng), bias = randomArray(N, &rng)
        for transposed in [false, true] {
            var chain = [Float](repeating: 0, count: M * N), exact = [Float](repeating: 0, count: M * N)
            for i in 0..<M {
                for j in 0..<N {
                    var s = bias[j], d = Double(s)
                    for k in 0..<K {
                        let x = inp[i * K + k], y = transposed ? w[j * K + k] : w[k * N + j]
                        s.addProduct(x, y)
                        d += Double(x) * Double(y)
                    }
                    chain[i * N + j] = s
                    exact[i * N + j] = Float(d)
                }
            }
            for threads in [1, 3] {
                var out = [Float](repeating: .nan, count: M * N)
                Parallel.withThreads(threads) {
                    if transposed { Matmul.forwardTransposed(&out, inp, w, bias, M: M, K: K, N: N) }
                    else { Matmul.forward(&out, inp, w, bias, M: M, K: K, N: N) }
                }
                let what = "\(M)x\(K)x\(N) transposed \(transposed) threads \(threads)"
                #expect(relativeError(out, exact) < 1e-5, "\(what)")
                if Matmul.ownProduct && N % 32 == 0 {
                    let same = out == chain
                    #expect(same, "\(what): not the chain of FMAs over k in order from the bias")
                }
            }
        }
    }

    /// A projection's weight and bias gradients (`Matmul.backward` without dinp): the bias's,
    /// made as the weight gradient's product copies dout, is exactly each column's chain of sums
    /// over the rows in order from zero, added to the gradient (`columnSums`' bits), on 1 and 3
    /// threads, whether the product's rows (K) or columns (N) are split, with rows in several
    /// runs (M over 512) and, at N 36, after OpenBLAS's product; the weight's within 1e-5.
    @Test(arguments: [(37, 20, 64), (600, 48, 288), (700, 320, 64), (9, 40, 36)])
    func weightAndBiasGradients(M: Int, K: Int, N: Int) {
        var rng = Random(seed: 24)
        let dout = randomArray(M * N, &rng), inp = randomArray(M * K, &rng), w = randomArray(K * N, &rng)
        let dw0 = randomArray(K * N, &rng), db0 = randomArray(N, &rng)
        var db = db0, dw = [Float](repeating: 0, count: K * N)
        for j in 0..<N {
            var s: Float = 0
            for r in 0..<M { s += dout[r * N + j] }
            db[j] += s
        }
        for k in 0..<K {
            for j in 0..<N {
                var d = Double(dw0[k * N + j])
                for r in 0..<M { d += Double(inp[r * K + k]) * Double(dout[r * N + j]) }
                dw[k * N + j] = Float(d)
            }
        }
        for threads in [1, 3] {
            var gw = dw0, gb = db0
            Parallel.withThreads(threads) {
                Matmul.backward(dinp: nil, dweight: &gw, dbias: &gb, dout: dout, inp: inp, weight: w, M: M, K: K, N: N)
            }
            let what = "\(M)x\(K)x\(N) threads \(threads)"
            let same = gb == db
            #expect(same, "\(what): not each column's chain of sums")
            #expect(relativeError(gw, dw) < 1e-5, "\(what)")
        }
    }

    /// The decoding products (one row) against naive loops: one slab, and slabs of rows with
    /// tails of rows and columns (and an empty last slab at K 65), on 1 and 3 threads with the
    /// same bits.
    @Test(arguments: [(36, 108), (100, 700), (64, 512), (520, 77), (65, 600)])
    func vectorProducts(K: Int, N: Int) {
        var rng = Random(seed: 14)
        let x = randomArray(K, &rng), w = randomArray(K * N, &rng), b = randomArray(N, &rng), wt = randomArray(N * K, &rng)
        var partials = [Float](repeating: .nan, count: Matmul.vectorPartials(N: N))
        let runs = [1, 3].map { n in
            Parallel.withThreads(n) {
                var y = [Float](repeating: .nan, count: N)
                Matmul.vectorForward(&y, x, w, b, K: K, N: N, partials: &partials)
                return y
            }
        }
        var yt = [Float](repeating: 0, count: N)
        Matmul.vectorForwardTransposed(&yt, x, wt, K: K, N: N)
        var ref = b, reft = [Float](repeating: 0, count: N)
        for n in 0..<N { for k in 0..<K { ref[n] += x[k] * w[k * N + n]; reft[n] += wt[n * K + k] * x[k] } }
        #expect(relativeError(runs[0], ref) < 1e-5)
        #expect(runs[0] == runs[1])
        #expect(relativeError(yt, reft) < 1e-5)
        #expect(Matmul.vectorSlabs(K: K, N: N) == (K * N >= 1 << 15 ? 4 : 1))
    }

    @Test func matmulTransposed() {
        let M = 5, K = 9, N = 11
        var rng = Random(seed: 4)
        var x = randomArray(M * K, &rng)
        var w = randomArray(N * K, &rng)
        let r = randomArray(M * N, &rng)
        func run(_ x: [Float], _ w: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: M * N)
            Matmul.forwardTransposed(&out, x, w, M: M, K: K, N: N)
            return out
        }
        var dx = [Float](repeating: 0, count: M * K), dw = [Float](repeating: 0, count: N * K)
        Matmul.backwardTransposed(dinp: &dx, dweight: &dw, dout: r, inp: x, weight: w, M: M, K: K, N: N)
        let numX = (0..<x.count).map { i in Float(numericGradient(&x, i, h: 1e-2) { weightedSum(run($0, w), r) }) }
        let numW = (0..<w.count).map { i in Float(numericGradient(&w, i, h: 1e-2) { weightedSum(run(x, $0), r) }) }
        #expect(relativeError(dx, numX) < tolerance)
        #expect(relativeError(dw, numW) < tolerance)
    }

    /// Attention's tiles: T = 70 and 150 span two and three blocks of 64 query rows (the last
    /// one short), with the gradient checked at every position of every block. Heads of 16 and
    /// 64 floats over short contexts take the products in registers (`Attention.Direct`), the
    /// others sgemm's; T = 37 and 20 end in a partial vector, T = 80 spans two blocks.
    @Test(arguments: [(2, 5, 8, 2, false), (1, 7, 18, 3, false), (1, 70, 4, 1, false), (1, 150, 2, 1, false),
                      (2, 37, 32, 2, true), (1, 20, 64, 1, true), (1, 80, 32, 2, false)])
    func attention(B: Int, T: Int, C: Int, NH: Int, inRegisters: Bool) {
        #expect(Attention.productsInRegisters(hs: C / NH, T: T) == inRegisters)
        var rng = Random(seed: 5)
        var qkv = randomArray(B * T * 3 * C, &rng)
        let r = randomArray(B * T * C, &rng)
        var scratch = [Float](repeating: 0, count: Attention.scratchCount(T: T))
        func run(_ qkv: [Float]) -> (out: [Float], stats: [Float]) {
            var out = [Float](repeating: 0, count: B * T * C), stats = [Float](repeating: 0, count: B * NH * T)
            Attention.forward(&out, stats: &stats, qkv: qkv, scratch: &scratch, B: B, T: T, C: C, NH: NH)
            return (out, stats)
        }
        // Forward against a naive masked softmax in Double.
        let f = run(qkv)
        #expect(relativeError(f.out, naiveAttention(qkv, B: B, T: T, C: C, NH: NH)) < 1e-5)
        var dqkv = randomArray(qkv.count, &rng)   // stale values: backward overwrites dqkv
        Attention.backward(dqkv: &dqkv, dout: r, qkv: qkv, stats: f.stats, scratch: &scratch, B: B, T: T, C: C, NH: NH)
        let num = (0..<qkv.count).map { i in Float(numericGradient(&qkv, i, h: 1e-2) { weightedSum(run($0).out, r) }) }
        #expect(relativeError(dqkv, num) < tolerance)
    }

    /// Attention with dropout on its weights: the forward pass against a naive one in Double
    /// that reads the (B,NH,T,T) mask drawn whole from the same stream, and the backward pass
    /// (which draws the mask again) against finite differences.
    @Test(arguments: [(2, 6, 8, 2, false), (1, 9, 32, 2, true)])
    func attentionWithDropout(B: Int, T: Int, C: Int, NH: Int, inRegisters: Bool) {
        #expect(Attention.productsInRegisters(hs: C / NH, T: T) == inRegisters)
        var rng = Random(seed: 15)
        var qkv = randomArray(B * T * 3 * C, &rng)
        let r = randomArray(B * T * C, &rng)
        let dropout = Dropout.Stream(key: 0x1234_5678, p: 0.3)
        let mask = dropoutMask(dropout, count: B * NH * T * T)
        #expect(mask.contains(0) && mask.contains(1 / 0.7))
        var scratch = [Float](repeating: 0, count: Attention.scratchCount(T: T))
        func run(_ qkv: [Float]) -> (out: [Float], stats: [Float]) {
            var out = [Float](repeating: 0, count: B * T * C), stats = [Float](repeating: 0, count: B * NH * T)
            Attention.forward(&out, stats: &stats, qkv: qkv, dropout: dropout, scratch: &scratch, B: B, T: T, C: C, NH: NH)
            return (out, stats)
        }
        let f = run(qkv)
        #expect(relativeError(f.out, naiveAttention(qkv, B: B, T: T, C: C, NH: NH, mask: mask)) < 1e-5)
        var plain = [Float](repeating: 0, count: B * T * C), stats = [Float](repeating: 0, count: B * NH * T)
        Attention.forward(&plain, stats: &stats, qkv: qkv, scratch: &scratch, B: B, T: T, C: C, NH: NH)
        #expect(relativeError(f.out, plain) > 1e-3)   // the mask changes the output
        var dqkv = randomArray(qkv.count, &rng)   // stale values: backward overwrites dqkv
        Attention.backward(dqkv: &dqkv, dout: r, qkv: qkv, stats: f.stats, dropout: dropout, scratch: &scratch, B: B, T: T, C: C, NH: NH)
        let num = (0..<qkv.count).map { i in Float(numericGradient(&qkv, i, h: 1e-2) { weightedSum(run($0).out, r) }) }
        #expect(relativeError(dqkv, num) < tolerance)
    }

    @Test func crossEntropy() {
        let M = 6, V = 37
        var rng = Random(seed: 6)
        var logits = randomArray(M * V, &rng, scale: 2)
        let targets: [Int32] = (0..<M).map { _ in Int32(rng.nextInt(below: V)) }
        func loss(_ x: [Float]) -> Double {
            var probs = x, losses = [Float](repeating: 0, count: M)
            CrossEntropy.forward(losses: &losses, logits: &probs, targets: targets, M: M, V: V)
            return losses.reduce(0) { $0 + Double($1) } / Double(M)
        }
        // Loss against log-sum-exp in Double.
        var ref = 0.0
        for r in 0..<M {
            let row = (0..<V).map { Double(logits[r * V + $0]) }
            let m = row.max()!
            ref += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[Int(targets[r])]
        }
        #expect(abs(loss(logits) - ref / Double(M)) < 1e-5)
        var probs = logits, losses = [Float](repeating: 0, count: M)
        CrossEntropy.forward(losses: &losses, logits: &probs, targets: targets, M: M, V: V)
        CrossEntropy.backward(probabilities: &probs, targets: targets, scale: 1 / Float(M), M: M, V: V)
        let num = (0..<logits.count).map { i in Float(numericGradient(&logits, i, h: 1e-2, loss)) }
        #expect(relativeError(probs, num) < tolerance)
    }

    @Test func embedding() {
        let B = 2, T = 5, C = 7, V = 4
        var rng = Random(seed: 7)
        var wte = randomArray(V * C, &rng), wpe = randomArray(T * C, &rng)
        let tokens: [Int32] = [0, 1, 1, 3, 0, 2, 2, 2, 0, 1]
        let r = randomArray(B * T * C, &rng)
        func run(_ wte: [Float], _ wpe: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: B * T * C)
            Embedding.forward(&out, tokens: tokens, wte: wte, wpe: wpe, B: B, T: T, C: C)
            return out
        }
        var dwte = [Float](repeating: 0, count: V * C), dwpe = [Float](repeating: 0, count: T * C)
        Embedding.backward(dwte: &dwte, dwpe: &dwpe, dout: r, tokens: tokens, B: B, T: T, C: C, V: V)
        let numE = (0..<wte.count).map { i in Float(numericGradient(&wte, i, h: 1e-2) { weightedSum(run($0, wpe), r) }) }
        let numP = (0..<wpe.count).map { i in Float(numericGradient(&wpe, i, h: 1e-2) { weightedSum(run(wte, $0), r) }) }
        #expect(relativeError(dwte, numE) < tolerance)
        #expect(relativeError(dwpe, numP) < tolerance)
    }

    @Test func adamWMatchesFormula() {
        var rng = Random(seed: 8)
        let n = 37
        var p = randomArray(n, &rng), m = randomArray(n, &rng, scale: 0.1), v = randomArray(n, &rng, scale: 0.1).map { $0 * $0 }
        let g = randomArray(n, &rng)
        let (p0, m0, v0) = (p, m, v)
        AdamW.update(param: &p, grad: g, m: &m, v: &v, count: n, lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3)
        for i in 0..<n {
            let mi = 0.9 * Double(m0[i]) + 0.1 * Double(g[i])
            let vi = 0.95 * Double(v0[i]) + 0.05 * Double(g[i]) * Double(g[i])
            let mhat = mi / (1 - pow(0.9, 3)), vhat = vi / (1 - pow(0.95, 3))
            let ref = Double(p0[i]) * (1 - 0.01 * 0.1) - 0.01 * mhat / (vhat.squareRoot() + 1e-8)
            #expect(abs(Double(p[i]) - ref) < 1e-6)
        }
    }

    /// Runs of a buffer updated in one region, split over threads anywhere (counts that are no
    /// multiple of 16, gaps between the runs): each float as the one-run update leaves it, bit
    /// for bit, on one thread or on three.
    @Test func adamWRunsMatchOneRunEach() {
        var rng = Random(seed: 9)
        let runs = [AdamW.Run(offset: 3, count: 37, stateOffset: 0, weightDecay: 0.1),
                    AdamW.Run(offset: 45, count: 16_411, stateOffset: 37, weightDecay: 0),
                    AdamW.Run(offset: 16_460, count: 5, stateOffset: 16_448, weightDecay: 0.1)]
        let n = 16_470, states = 16_453
        let p0 = randomArray(n, &rng), g = randomArray(n, &rng)
        let m0 = randomArray(states, &rng, scale: 0.1), v0 = randomArray(states, &rng, scale: 0.1).map { $0 * $0 }
        var pr = p0, mr = m0, vr = v0
        for r in runs {
            pr.withUnsafeMutableBufferPointer { p in
                mr.withUnsafeMutableBufferPointer { m in
                    vr.withUnsafeMutableBufferPointer { v in
                        g.withUnsafeBufferPointer { g in
                            Parallel.withThreads(1) {
                                AdamW.update(param: p.baseAddress! + r.offset, grad: g.baseAddress! + r.offset,
                                             m: m.baseAddress! + r.stateOffset, v: v.baseAddress! + r.stateOffset, count: r.count,
                                             lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: r.weightDecay, step: 3)
                            }
                        }
                    }
                }
            }
        }
        for threads in [1, 3] {
            var p = p0, m = m0, v = v0
            runs.withUnsafeBufferPointer { runs in
                Parallel.withThreads(threads) {
                    AdamW.update(param: &p, grad: g, m: &m, v: &v, runs: runs, lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 3)
                }
            }
            #expect(p == pr && m == mr && v == vr)
            #expect(p[0..<3] == p0[0..<3] && p[40..<45] == p0[40..<45])   // gaps untouched
        }
    }

    @Test func expAndTanh() {
        for x in stride(from: Float(-20), through: 20, by: 0.37) {
            #expect(abs(fastExp(x) - exp(x)) <= 3e-7 * exp(x))
            let t = simdTanh(Float32x16(repeating: x))[0]
            #expect(abs(t - tanh(x)) < 2e-7 * 4)
        }
    }
}

import Foundation

/// Causal attention in Double, softmax then the (B,NH,T,T) mask if any, for the kernel tests:
/// qkv (B,T,3C) -> (B,T,C).
func naiveAttention(_ qkv: [Float], B: Int, T: Int, C: Int, NH: Int, mask: [Float]? = nil) -> [Float] {
    let hs = C / NH
    var out = [Float](repeating: 0, count: B * T * C)
    for b in 0..<B { for h in 0..<NH { for t in 0..<T {
        var s = [Double](repeating: 0, count: t + 1)
        for t2 in 0...t {
            var d = 0.0
            for i in 0..<hs { d += Double(qkv[(b * T + t) * 3 * C + h * hs + i]) * Double(qkv[(b * T + t2) * 3 * C + C + h * hs + i]) }
            s[t2] = d / Double(hs).squareRoot()
        }
        let m = s.max()!
        let e = s.map { exp($0 - m) }
        let z = e.reduce(0, +)
        for i in 0..<hs {
            var y = 0.0
            for t2 in 0...t {
                let keep = mask.map { Double($0[((b * NH + h) * T + t) * T + t2]) } ?? 1
                y += e[t2] / z * keep * Double(qkv[(b * T + t2) * 3 * C + 2 * C + h * hs + i])
            }
            out[(b * T + t) * C + h * hs + i] = Float(y)
        }
    } } }
    return out
}
