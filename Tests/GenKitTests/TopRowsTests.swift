import Testing
import GenKit
import GenKernels

/// Greedy decoding and top-k sampling read only the largest logits: `TopRows` computes those
/// exactly (the bits of the full product) from an 8-bit screen and rules the rest out.
@Suite struct TopRowsTests {
    /// Against the full product (`Matmul.vectorForwardTransposed`): every row it computed has the
    /// full product's bits, every row it ruled out (−∞) is below the k-th largest, and the k
    /// largest are among those computed. Shapes with blocks of 64, a tail of 32, a ragged tail;
    /// logits peaked (one large input direction), flat, and with tied rows; one thread and two.
    @Test(arguments: [(288, 1), (288, 7), (200, 1), (64, 40), (300, 3)])
    func keepsTheLargestExactly(_ K: Int, _ k: Int) {
        let N = 1500
        var rng = Random(seed: UInt64(K * 100 + k))
        for flavour in 0..<3 {
            var w = (0..<(N * K)).map { _ in Float(rng.nextNormal()) * 0.05 }
            if flavour == 2 { for n in stride(from: 10, to: N, by: 97) { for i in 0..<K { w[n * K + i] = w[i] } } }
            let x = (0..<K).map { i in Float(rng.nextNormal()) * (flavour == 1 ? 0.01 : 1) + (i % 9 == 0 ? 2 : 0) }
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
                var absSums = [Float](repeating: 0, count: N * Int8Blocks.blocks(K: K))
                Parallel.withThreads(threads) {
                    TopRows.absoluteSums(q: q, K: K, N: N, into: &absSums)
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
            top.keepExact(topLogits: k)
            #expect(top.exactLogits == k)
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
        small.keepExact(topLogits: 1)
        #expect(small.exactLogits == 0)
        let rounded = GPTModel(config: c)
        rounded.initialize(seed: 22)
        rounded.roundToInt8()
        let int8 = Decoder(model: rounded)
        int8.keepExact(topLogits: 1)
        #expect(int8.exactLogits == 0)
    }

    /// Top-k sampling weighs the k largest among themselves; greedy and top-k alone read only
    /// them, the rest of the rules read every logit.
    @Test func samplerSaysWhatItReads() {
        var p = SamplingParameters()
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == 0)
        p.temperature = 0
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == 1)
        p.temperature = 0.8; p.topK = 7
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == 7)
        p.topP = 0.9
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == 0)
        p.topP = 1; p.repeatPenalty = 1.2
        #expect(Sampler(vocabSize: 10, parameters: p, seed: 1).logitsRead == 0)
        // Top-k over logits whose others are −∞ picks what it picks over the full logits.
        p.repeatPenalty = 1
        var rng = Random(seed: 5)
        let logits = (0..<500).map { _ in Float(rng.nextNormal()) * 3 }
        let order = logits.indices.sorted { logits[$0] > logits[$1] }
        var masked = [Float](repeating: -.infinity, count: 500)
        for i in order.prefix(9) { masked[i] = logits[i] }
        for seed in 0..<50 as Range<UInt64> {
            var a = logits, b = masked
            let s1 = Sampler(vocabSize: 500, parameters: p, seed: seed), s2 = Sampler(vocabSize: 500, parameters: p, seed: seed)
            #expect(s1.sample(&a, recent: []) == s2.sample(&b, recent: []))
        }
    }
}
