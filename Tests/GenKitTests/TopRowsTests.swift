import Testing
import GenKit
import GenKernels
import Foundation

/// Greedy decoding and top-k sampling read only the largest logits: `TopRows` computes those
/// exactly (the bits of the full product) from an 8-bit screen and rules the rest out.
@Suite struct TopRowsTests {
    /// Against the full product (`Matmul.vectorForwardTransposed`): every row it computed has the
    /// full product's bits, every row it ruled out (−∞) is below the k-th largest, and the k
    /// largest are among those computed. Shapes with blocks of 64, a tail of 32, a ragged tail;
    /// logits peaked (one large input direction), flat, with tied rows, and rising row after row
    /// (more rows than k = 1's lists hold); one thread and two.
    @Test(arguments: [(288, 1), (288, 7), (200, 1), (64, 40), (300, 3)])
    func keepsTheLargestExactly(_ K: Int, _ k: Int) {
        let N = 1500
        var rng = Random(seed: UInt64(K * 100 + k))
        for flavour in 0..<4 {
            var w = (0..<(N * K)).map { _ in Float(rng.nextNormal()) * 0.05 }
            if flavour == 2 { for n in stride(from: 10, to: N, by: 97) { for i in 0..<K { w[n * K + i] = w[i] } } }
            var x = (0..<K).map { i in Float(rng.nextNormal()) * (flavour == 1 ? 0.01 : 1) + (i % 9 == 0 ? 2 : 0) }
            if flavour == 3 {   // logits rising row after row: k = 1 keeps too many rows on the way
                for n in 0..<N { for i in 0..<K { w[n * K + i] = w[i] * (1 + Float(n) / 64) } }
                x = (0..<K).map { w[$0] }
            }
            var q = [Int8](repeating: 0, count: N * Int8Blocks.rowBytes(K: K))
            var s = [Float](repeating: 0, count: N * Int8Blocks.blocks(K: K))
            let before = w
            Int8Blocks.quantize(rowsOf: &w, K: K, N: N, q: &q, scales: &s, roundingWeights: false)
            #expect(w == before, "the fp32 rows are only read")
            var full = [Float](repeating: 0, count: N)
            Matmul.vectorForwardTransposed(&full, x, w, K: K, N: N)
            let kth = full.sorted(by: >)[k - 1]
            for threads in [1, 2] {
                var y = [Float](repeating: 0, count: N)
                var scratch = [Float](repeating: 0, count: TopRows.scratchCount(K: K, N: N, k: k))
                let absSums = absoluteSums(q: q, K: K, N: N)
                Parallel.withThreads(threads) {
                    TopRows.forward(&y, x, weight: w, q: q, scales: s, absSums: absSums, K: K, N: N, k: k, scratch: &scratch)
                }
                var computed = 0, wrong = 0
                for n in 0..<N {
                    if y[n] == -.infinity {
                        if full[n] >= kth { wrong += 1 }
                    } else {
                        computed += 1
                        if y[n].bitPattern != full[n].bitPattern { wrong += 1 }
                    }
                }
                #expect(wrong == 0, "K \(K) k \(k) flavour \(flavour) threads \(threads)")
                // The screen must rule most rows out where the logits spread (else it saves nothing).
                if flavour == 0 { #expect(computed < N / 4, "computed \(computed) of \(N)") }
                #expect(computed >= k)
            }
        }
    }

    /// Greedy's pick in vectors: the first largest entry, NaNs passed over, as a scan keeping
    /// the first strictly larger entry picks it. Lengths around the vector width; entries
    /// spread, tied, with NaNs, starting with NaN, and all of ±0 and −∞.
    @Test func indexOfMaxMatchesTheScan() {
        var rng = Random(seed: 5)
        for n in [1, 2, 15, 16, 17, 33, 100, 1000] {
            for flavour in 0..<5 {
                var x = (0..<n).map { _ in Float(rng.nextNormal()) }
                switch flavour {
                case 1: x = x.map { ($0 * 2).rounded() }
                case 2: for i in stride(from: n / 3, to: n, by: 5) { x[i] = .nan }
                case 3: x[0] = .nan
                case 4: x = x.map { $0 > 1 ? -.infinity : $0 > 0 ? 0 : -0.0 }
                default: break
                }
                var best = 0
                for i in 1..<n where x[i] > x[best] { best = i }
                #expect(indexOfMax(x, n) == best, "n \(n) flavour \(flavour)")
            }
        }
    }

    /// A decoder asked for the top logits gives the same greedy tokens and the same top-k values,
    /// bit for bit, as one computing every logit; a model too small for the screen, or decoding
    /// from 8 bits, keeps every logit.
    @Test func decoderTopLogitsMatchFullLogits() {
        let c = GPTConfig(nLayer: 2, nHead: 4, nEmbd: 256, blockSize: 48, vocabSize: 4200)
        let model = GPTModel(config: c)
        model.initialize(seed: 21)
        model.arrangeForDecoding()
        for k in [1, 30] {
            let full = Decoder(model: model), top = Decoder(model: model)
            top.keep(.largest(k))
            #expect(top.kept == .largest(k))
            var token: Int32 = 5
            var ruledOut = 0
            for _ in 0..<40 {
                full.feed(token); top.feed(token)
                let a = Array(UnsafeBufferPointer(start: full.logits, count: c.vocabSize))
                let b = Array(UnsafeBufferPointer(start: top.logits, count: c.vocabSize))
                let order = a.indices.sorted { a[$0] > a[$1] || (a[$0] == a[$1] && $0 < $1) }
                for i in order.prefix(k) { #expect(b[i].bitPattern == a[i].bitPattern) }
                ruledOut += b.filter { $0 == -.infinity }.count
                token = Int32(order[0])
            }
            #expect(ruledOut > 40 * c.vocabSize / 2)
        }
        let small = Decoder(model: GPTModel(config: GPTConfig(nLayer: 1, nHead: 2, nEmbd: 32, blockSize: 8, vocabSize: 300)))
        small.keep(.largest(1))
        #expect(small.kept == .all)
        small.keep(.bounded)
        #expect(small.kept == .all)
        let rounded = GPTModel(config: c)
        rounded.initialize(seed: 22)
        rounded.roundToInt8()
        let int8 = Decoder(model: rounded)
        int8.keep(.largest(1))
        #expect(int8.kept == .all)
        int8.keep(.bounded)
        #expect(int8.kept == .all)
        let wide = Decoder(model: model)
        wide.keep(.largest(c.vocabSize / 16 + 1))
        #expect(wide.kept == .all)
    }

    /// Top-k sampling weighs the k largest among themselves; greedy and top-k alone read only
    /// them, plain sampling and min-p every logit within a bound, the rest of the rules (and
    /// min-p with top-k or top-p) every logit.
    @Test func samplerSaysWhatItReads() {
        var p = SamplingParameters()
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .bounded)
        p.temperature = 0
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(1))
        p.temperature = 0.8; p.topK = 7
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(7))
        p.topP = 0.9
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(7))
        p.minP = 0.1
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(7))
        p.minP = 0
        p.topP = 1; p.repeatPenalty = 1.2
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(7 + 64))
        p.repeatPenalty = 0.8
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .all)
        p.repeatPenalty = 1.2
        p.topK = 0
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .bounded)
        p.temperature = 0
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(1 + 64))
        p.repeatPenalty = 0.8
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .all)
        p.repeatPenalty = 1.2
        p.temperature = 0.8; p.topK = 7
        p.repeatPenalty = 1; p.topK = 0; p.minP = 0.1
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .bounded)
        p.topK = 7
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(7))
        p.topK = 0; p.topP = 0.9
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .all)
        p.minP = 0
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .bounded)
        p.minP = 0.1
        p.temperature = 0
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(1))
        p.topP = 1
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == .largest(1))
        p.temperature = 0.8; p.minP = 0; p.topK = 7
        // Top-k (alone, with top-p, with min-p, with both) over logits whose others are −∞
        // picks what it picks over the full logits.
        p.repeatPenalty = 1
        var rng = Random(seed: 5)
        let logits = (0..<500).map { _ in Float(rng.nextNormal()) * 3 }
        let order = logits.indices.sorted { logits[$0] > logits[$1] }
        var masked = [Float](repeating: -.infinity, count: 500)
        for i in order.prefix(9) { masked[i] = logits[i] }
        for (topP, minP) in [(Float(1), Float(0)), (0.6, 0), (1, 0.02), (0.9, 0.01)] {
            p.topP = topP; p.minP = minP
            #expect(Sampler(vocabSize: 500, parameters: p, seed: 1).logitsRead == .largest(7))
            var picks = Set<Int32>()
            for seed in 0..<50 as Range<UInt64> {
                var a = logits, b = masked
                let s1 = Sampler(vocabSize: 500, parameters: p, seed: seed), s2 = Sampler(vocabSize: 500, parameters: p, seed: seed)
                let pick = s1.sample(&a, recent: [])
                #expect(pick == s2.sample(&b, recent: []), "top-p \(topP) min-p \(minP)")
                picks.insert(pick)
            }
            #expect(picks.count > 1 && picks.isSubset(of: order.prefix(7).map { Int32($0) }))
        }
    }

    /// Greedy decoding and top-k sampling with a repeat penalty above 1 read the k + 64 largest
    /// logits (`logitsRead`): over logits whose others are −∞ they pick what they pick over
    /// every logit, from the same seed, with the penalised tokens drawn from the largest (so
    /// that the penalty reorders the top, and tokens past the k largest move into it), listed
    /// more than once and more than the window holds, positive and negative logits alike.
    @Test func repeatPenaltyFromLargest() {
        let V = 3000
        var rng = Random(seed: 9)
        var changed = 0
        for trial in 0..<40 {
            let logits = (0..<V).map { _ in Float(rng.nextNormal()) * 2 + (trial % 4 == 0 ? -9 : 0) }
            let ranked = logits.indices.sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
            let recent = (0..<(30 + trial * 3)).map { _ in Int32(ranked[rng.nextInt(below: 90)]) }
            for (temperature, topK) in [(Float(0), 0), (0.9, 1), (0.9, 5), (1.3, 40)] {
                var p = SamplingParameters()
                p.temperature = temperature; p.topK = topK; p.repeatPenalty = 1 + 0.25 * Float(trial % 5 + 1)
                guard case .largest(let n) = Sampler(vocabSize: V, parameters: p, seed: 1).logitsRead else {
                    Issue.record("T \(temperature) top-k \(topK): not the largest"); continue
                }
                #expect(n == max(topK, 1) + 64)
                var masked = [Float](repeating: -.infinity, count: V)
                for i in ranked.prefix(n) { masked[i] = logits[i] }
                for seed in 0..<8 as Range<UInt64> {
                    var a = logits, b = masked
                    let s1 = Sampler(vocabSize: V, parameters: p, seed: seed), s2 = Sampler(vocabSize: V, parameters: p, seed: seed)
                    let full = s1.sample(&a, recent: recent[...]), read = s2.sample(&b, recent: recent[...])
                    #expect(full == read, "trial \(trial) T \(temperature) top-k \(topK) seed \(seed)")
                    if !ranked.prefix(max(topK, 1)).contains(Int(full)) { changed += 1 }
                }
            }
        }
        // The penalty did move tokens from past the k largest into the picks.
        #expect(changed > 100, "\(changed) picks from past the k largest")
    }

    /// The screen's bounds hold for every row: |full product − approximation| ≤ bound, with
    /// the bound below the spread of the logits at output layers' widths (else plain sampling
    /// would turn most draws down).
    /// Both of the screen's paths: rows fetched ahead (four at a time) and not (one at a time
    /// without VNNI), the first of which every CPU takes (`TopRows.fetchesAhead`); and rows
    /// wider than the chunks of x that the AVX2 path keeps on the stack (8256 values: one value
    /// at a time there).
    @Test(arguments: [288, 200, 768, 8256], [false, true])
    func approximationsAreWithinTheirBounds(_ K: Int, fetchingAhead: Bool) {
        let N = 1202
        var rng = Random(seed: UInt64(K))
        for flavour in 0..<2 {
            var w = (0..<(N * K)).map { _ in Float(rng.nextNormal()) * 0.05 }
            let x = (0..<K).map { i in Float(rng.nextNormal()) * (flavour == 1 ? 0.01 : 1) + (i % 9 == 0 ? 2 : 0) }
            var q = [Int8](repeating: 0, count: N * Int8Blocks.rowBytes(K: K))
            var s = [Float](repeating: 0, count: N * Int8Blocks.blocks(K: K))
            Int8Blocks.quantize(rowsOf: &w, K: K, N: N, q: &q, scales: &s, roundingWeights: false)
            var full = [Float](repeating: 0, count: N)
            Matmul.vectorForwardTransposed(&full, x, w, K: K, N: N)
            var y = [Float](repeating: 0, count: N), bound = [Float](repeating: 0, count: N)
            var scratch = [Float](repeating: 0, count: TopRows.approximateScratchCount(K: K))
            let absSums = absoluteSums(q: q, K: K, N: N)
            TopRows.approximate(&y, bound: &bound, x, q: q, scales: s, absSums: absSums, K: K, N: N, scratch: &scratch,
                                fetchingAhead: fetchingAhead)
            var outside = 0, tightest = Float.infinity
            for n in 0..<N {
                if abs(full[n] - y[n]) > bound[n] { outside += 1 }
                tightest = min(tightest, bound[n] - abs(full[n] - y[n]))
            }
            #expect(outside == 0, "K \(K) flavour \(flavour): \(outside) rows outside their bounds")
            #expect(tightest >= 0)
            let mean = full.reduce(0, +) / Float(N)
            let spread = (full.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(N)).squareRoot()
            let widest = bound.max()!
            // Narrower than the logits' spread at output layers' widths (the bound grows with K).
            if K <= 1600 { #expect(widest < spread, "K \(K) flavour \(flavour): bound \(widest), spread \(spread)") }
        }
    }

    /// Plain sampling from bounded logits draws from softmax(exact / T), the distribution of
    /// sampling from the exact logits: 200,000 draws over 12 tokens whose approximations are
    /// off by up to their bounds (up to 1.5, wide against T), each token's count within 5
    /// standard deviations of its expectation, at T 1 and 0.3; and it asks for few exact logits.
    @Test(arguments: [Float(1), 0.3])
    func boundedSamplingIsExact(_ T: Float) {
        let V = 12, draws = 200_000
        var rng = Random(seed: 17)
        let exact = (0..<V).map { _ in Float(rng.nextNormal()) }
        let bounds = (0..<V).map { _ in rng.nextFloat() * 1.5 }
        let approx = (0..<V).map { exact[$0] + (2 * rng.nextFloat() - 1) * bounds[$0] }
        let top = exact.map { $0 / T }.max()!
        let weights = exact.map { Double(exp($0 / T - top)) }
        let total = weights.reduce(0, +)
        var p = SamplingParameters()
        p.temperature = T
        let sampler = Sampler(vocabSize: V, parameters: p, seed: 3)
        #expect(sampler.logitsRead == .bounded)
        var counts = [Int](repeating: 0, count: V), asked = 0
        for _ in 0..<draws {
            let t = sampler.sample(approx, bounds: bounds) { asked += 1; return exact[$0] }
            counts[Int(t)] += 1
        }
        for i in 0..<V {
            let expected = Double(draws) * weights[i] / total
            let sd = (expected * (1 - weights[i] / total)).squareRoot()
            #expect(abs(Double(counts[i]) - expected) <= 5 * sd + 1, "token \(i): \(counts[i]) drawn, \(expected) expected")
        }
        #expect(asked < 3 * draws, "asked \(asked) exact logits for \(draws) draws")
    }

    /// V exact logits (normal, times `spread`), bounds up to `widest`, and estimates within them.
    func boundedLogits(_ V: Int, seed: UInt64, spread: Float, widest: Float) -> (exact: [Float], bounds: [Float], approx: [Float]) {
        var rng = Random(seed: seed)
        let exact = (0..<V).map { _ in Float(rng.nextNormal()) * spread }
        let bounds = (0..<V).map { _ in rng.nextFloat() * widest }
        let approx = (0..<V).map { exact[$0] + (2 * rng.nextFloat() - 1) * bounds[$0] }
        return (exact, bounds, approx)
    }

    /// Min-p sampling from bounded logits keeps the tokens, and draws the token, that sampling
    /// from the exact logits does (the same seed, the same picks), asking for the exact logits
    /// of the candidates alone: tight bounds (few candidates), and bounds so wide that every
    /// token is one (computed on the pool).
    @Test(arguments: [(Float(0.8), Float(0.05), Float(0.5)), (1.5, 0.2, 0.3), (0.8, 0.05, 40)])
    func minPFromBoundsMatchesEveryLogit(_ T: Float, _ minP: Float, _ widest: Float) {
        let V = 5000, draws = 300
        let (exact, bounds, approx) = boundedLogits(V, seed: 29, spread: 3, widest: widest)
        var p = SamplingParameters()
        p.temperature = T
        p.minP = minP
        let bounded = Sampler(vocabSize: V, parameters: p, seed: 5), full = Sampler(vocabSize: V, parameters: p, seed: 5)
        #expect(bounded.logitsRead == .bounded)
        var asked = 0, same = 0, kinds = Set<Int32>()
        for _ in 0..<draws {
            var logits = exact
            let want = full.sample(&logits, recent: [])
            let got = bounded.sample(approx, bounds: bounds) { asked += 1; return exact[$0] }
            if got == want { same += 1 }
            kinds.insert(got)
        }
        #expect(same == draws, "\(same) of \(draws) draws the same")
        #expect(kinds.count > 3, "only \(kinds.count) tokens drawn")
        if widest < 1 { #expect(asked < draws * V / 20, "asked \(asked) exact logits for \(draws) draws") }
    }

    /// Top-p sampling from bounded logits keeps the nucleus, and draws the token, that sampling
    /// from the exact logits does (the same seed, the same picks): a nucleus of a few tokens
    /// settled from the 256 candidates; one of about 400, one of about 2700 (of 5000), and bounds
    /// far too wide, from every logit (after four such draws, without asking for bounds).
    @Test(arguments: [(Float(0.8), Float(0.9), Float(0.05), Float(6), 256), (1, 0.9, 0.05, 2.5, 256 + 5000),
                      (1, 0.95, 0.2, 1.5, 256 + 5000), (0.8, 0.9, 40, 4, 256 + 5000)])
    func topPFromBoundsMatchesEveryLogit(_ T: Float, _ topP: Float, _ widest: Float, _ spread: Float, _ perDraw: Int) {
        let V = 5000, draws = 200
        let (exact, bounds, approx) = boundedLogits(V, seed: 31, spread: spread, widest: widest)
        var p = SamplingParameters()
        p.temperature = T
        p.topP = topP
        let bounded = Sampler(vocabSize: V, parameters: p, seed: 7), full = Sampler(vocabSize: V, parameters: p, seed: 7)
        var asked = 0, same = 0, kinds = Set<Int32>()
        for _ in 0..<draws {
            var logits = exact
            let want = full.sample(&logits, recent: [])
            let got: Int32
            if bounded.logitsRead == .bounded {
                got = bounded.sample(approx, bounds: bounds) { asked += 1; return exact[$0] }
            } else {
                var l = exact
                got = bounded.sample(&l, recent: [])
                asked += V
            }
            if got == want { same += 1 }
            kinds.insert(got)
        }
        #expect(same == draws, "\(same) of \(draws) draws the same")
        #expect(kinds.count > 2, "only \(kinds.count) tokens drawn")
        // The exact logits asked for: the candidates alone, or every logit.
        #expect(asked <= draws * perDraw && asked > draws * perDraw / 2, "asked \(asked) exact logits for \(draws) draws")
    }

    /// With the repeat penalty, min-p and top-p from bounded logits pick what sampling from the
    /// exact logits picks (the same seed), the recent tokens — the six likeliest, one of them
    /// twice, and two others — penalised once each; plain sampling's 200,000 draws over 12
    /// tokens follow softmax(penalised / T) within 5 standard deviations.
    @Test func repeatPenaltyFromBounds() {
        let V = 5000, draws = 200
        let (exact, bounds, approx) = boundedLogits(V, seed: 37, spread: 4, widest: 0.05)
        let ranked = exact.indices.sorted { exact[$0] > exact[$1] }
        let recent = (Array(ranked.prefix(6)) + [ranked[0], 17, 4999]).map { Int32($0) }
        for (minP, topP) in [(Float(0.05), Float(1)), (0, 0.9)] {
            var p = SamplingParameters()
            p.temperature = 0.9; p.minP = minP; p.topP = topP; p.repeatPenalty = 1.3
            let bounded = Sampler(vocabSize: V, parameters: p, seed: 11), full = Sampler(vocabSize: V, parameters: p, seed: 11)
            #expect(bounded.logitsRead == .bounded)
            var same = 0, kinds = Set<Int32>()
            for _ in 0..<draws {
                var logits = exact, again = exact
                let want = full.sample(&logits, recent: recent[...])
                let got = bounded.logitsRead == .bounded
                    ? bounded.sample(approx, bounds: bounds, recent: recent[...]) { exact[$0] }
                    : bounded.sample(&again, recent: recent[...])
                if got == want { same += 1 }
                kinds.insert(got)
            }
            #expect(same == draws, "min-p \(minP), top-p \(topP): \(same) of \(draws) draws the same")
            #expect(kinds.count > 1, "only \(kinds.count) tokens drawn")
        }
        let v = 12, n = 200_000, seen: Set<Int> = [0, 3, 7]
        let (e, b, a) = boundedLogits(v, seed: 41, spread: 1, widest: 1)
        var p = SamplingParameters()
        p.temperature = 1; p.repeatPenalty = 1.5
        let penalised = e.indices.map { seen.contains($0) ? (e[$0] > 0 ? e[$0] / 1.5 : e[$0] * 1.5) : e[$0] }
        let w = penalised.map { Double(exp($0)) }, total = w.reduce(0, +)
        let sampler = Sampler(vocabSize: v, parameters: p, seed: 5)
        #expect(sampler.logitsRead == .bounded)
        let seenRecently: [Int32] = [3, 0, 3, 7]
        var counts = [Int](repeating: 0, count: v)
        for _ in 0..<n { counts[Int(sampler.sample(a, bounds: b, recent: seenRecently[...]) { e[$0] })] += 1 }
        for i in 0..<v {
            let expected = Double(n) * w[i] / total, sd = (expected * (1 - w[i] / total)).squareRoot()
            #expect(abs(Double(counts[i]) - expected) <= 5 * sd + 1, "token \(i): \(counts[i]) drawn, \(expected) expected")
        }
    }

    /// Bounded top-p that settles nothing four draws in a row asks for every logit for the
    /// next 64 draws, then for bounds again.
    @Test func flatNucleusStopsAskingForBounds() {
        let V = 3000
        var p = SamplingParameters()
        p.temperature = 1; p.topP = 0.95
        let sampler = Sampler(vocabSize: V, parameters: p, seed: 3)
        let approx = [Float](repeating: 0, count: V), bounds = [Float](repeating: 0.5, count: V)
        for _ in 0..<4 {
            #expect(sampler.logitsRead == .bounded)
            _ = sampler.sample(approx, bounds: bounds) { Float($0 % 7) * 0.1 }
        }
        for _ in 0..<64 {
            #expect(sampler.logitsRead == .all)
            var l = approx
            _ = sampler.sample(&l, recent: [])
        }
        #expect(sampler.logitsRead == .bounded)
    }

    /// The bounds of the normaliser: each sum within 10⁻⁵ of Double's (a tail under one vector).
    @Test(arguments: [1000, 7])
    func boundedMassMatchesDouble(_ n: Int) {
        var rng = Random(seed: UInt64(n))
        let a = (0..<n).map { _ in Float(rng.nextNormal()) * 4 }, b = (0..<n).map { _ in rng.nextFloat() }
        let (low, high) = boundedMass(a, b, scale: 1.25, shift: 12, n: n)
        let l = (0..<n).map { Foundation.exp(Double((a[$0] - b[$0]) * 1.25 - 12)) }.reduce(0, +)
        let h = (0..<n).map { Foundation.exp(Double((a[$0] + b[$0]) * 1.25 - 12)) }.reduce(0, +)
        #expect(abs(Double(low) - l) <= 1e-5 * l && abs(Double(high) - h) <= 1e-5 * h)
    }

    /// Bounded sampling ends whatever the exact logits are: NaN everywhere, or values far
    /// outside their bounds (its weights made exact after 64 turned-down draws).
    @Test func boundedSamplingEndsOnBadLogits() {
        let V = 600
        var p = SamplingParameters()
        p.temperature = 0.05
        let approx = [Float](repeating: 0, count: V), bounds = [Float](repeating: 0.5, count: V)
        let sampler = Sampler(vocabSize: V, parameters: p, seed: 9)
        for _ in 0..<20 {
            let t = sampler.sample(approx, bounds: bounds) { _ in .nan }
            #expect(t >= 0 && Int(t) < V)
        }
        // Far below their bounds but one: only that one can be drawn.
        for _ in 0..<20 {
            #expect(sampler.sample(approx, bounds: bounds) { $0 == 123 ? 0.5 : -50 } == 123)
        }
    }

    /// A decoder keeping bounded logits: after each `feed` the full logits lie within the
    /// bounds and `exactLogit` gives their bits, min-p sampling from them picks what it picks
    /// from the full logits, and sampling from them at temperature 1 asks for few exact logits;
    /// after a `fill` the logits are exact (no bounds).
    @Test func decoderBoundsHoldTheFullLogits() throws {
        let c = GPTConfig(nLayer: 2, nHead: 4, nEmbd: 256, blockSize: 48, vocabSize: 4200)
        let model = GPTModel(config: c)
        model.initialize(seed: 23)
        model.arrangeForDecoding()
        let full = Decoder(model: model), bounded = Decoder(model: model)
        bounded.keep(.bounded)
        #expect(bounded.kept == .bounded)
        let prompt: [Int32] = [3, 1, 4]
        prompt.withUnsafeBufferPointer { full.fill($0); bounded.fill($0) }
        #expect(bounded.bounds == nil)
        var token: Int32 = 9, asked = 0
        for _ in 0..<20 {
            full.feed(token); bounded.feed(token)
            guard let bounds = bounded.bounds else { Issue.record("no bounds after feed"); return }
            var outside = 0
            for i in 0..<c.vocabSize where abs(full.logits[i] - bounded.logits[i]) > bounds[i] { outside += 1 }
            #expect(outside == 0)
            for i in stride(from: 0, to: c.vocabSize, by: 419) {
                #expect(bounded.exactLogit(i).bitPattern == full.logits[i].bitPattern)
            }
            // Min-p from the bounds picks what min-p from the full logits picks.
            var m = SamplingParameters()
            m.temperature = 0.5; m.minP = 0.1
            var logits = Array(UnsafeBufferPointer(start: full.logits, count: c.vocabSize))
            let want = Sampler(vocabSize: c.vocabSize, parameters: m, seed: UInt64(token)).sample(&logits, recent: [])
            let got = Sampler(vocabSize: c.vocabSize, parameters: m, seed: UInt64(token))
                .sample(bounded.logits, bounds: bounds) { bounded.exactLogit($0) }
            #expect(got == want)
            // So does top-p.
            m.minP = 0; m.topP = 0.9
            logits = Array(UnsafeBufferPointer(start: full.logits, count: c.vocabSize))
            let wantP = Sampler(vocabSize: c.vocabSize, parameters: m, seed: UInt64(token)).sample(&logits, recent: [])
            let gotP = Sampler(vocabSize: c.vocabSize, parameters: m, seed: UInt64(token))
                .sample(bounded.logits, bounds: bounds) { bounded.exactLogit($0) }
            #expect(gotP == wantP)
            var p = SamplingParameters()
            p.temperature = 1
            let sampler = Sampler(vocabSize: c.vocabSize, parameters: p, seed: UInt64(token))
            token = sampler.sample(bounded.logits, bounds: bounds) { asked += 1; return bounded.exactLogit($0) }
        }
        // Turned-down draws are few: about one exact logit per token.
        #expect(asked < 40, "\(asked) exact logits for 20 tokens")
    }

    /// The proposal weights: exp((a + b)·scale − max) within 2·10⁻⁶ of Double's, the max
    /// returned, and each block's sum (a ragged last block, and n under one vector).
    @Test(arguments: [1000, 7, 512])
    func shiftedExpMatchesDouble(_ n: Int) {
        var rng = Random(seed: UInt64(n))
        let a = (0..<n).map { _ in Float(rng.nextNormal()) * 4 }, b = (0..<n).map { _ in rng.nextFloat() }
        let scale: Float = 1.25, span = 256
        var w = [Float](repeating: 0, count: n), sums = [Float](repeating: 0, count: (n + span - 1) / span)
        let m = shiftedExp(&w, a, plus: b, scale: scale, n: n, span: span, sums: &sums)
        #expect(m == (0..<n).map { (a[$0] + b[$0]) * scale }.max()!)
        for i in 0..<n {
            let e = Foundation.exp(Double((a[i] + b[i]) * scale - m))
            #expect(abs(Double(w[i]) - e) <= 2e-6 * e, "entry \(i)")
        }
        for k in sums.indices {
            let s = w[(k * span)..<min(n, (k + 1) * span)].reduce(0, +)
            #expect(abs(sums[k] - s) <= 1e-5 * s, "block \(k)")
        }
    }
}
