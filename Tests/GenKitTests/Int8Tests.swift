import Testing
import GenKit
import GenKernels
import Foundation
import TestScratch

/// Weights in 8 bits: the rounding, the matrix-vector kernel that reads them, and a decoder on
/// them against the full forward pass of the rounded model.
@Suite struct Int8Tests {
    /// Every value is rounded to the nearest multiple of its block's scale (max|w|/127), the
    /// stored bytes give the same values, and the kernel's product equals the fp32 product of
    /// the rounded weights, for row lengths with whole blocks of 64, 32 values after them, fewer
    /// than 32 after them, and row counts not a multiple of four (nor of the sixteen columns
    /// the (K,N) layout is rounded by at a time).
    @Test(arguments: [(128, 9), (288, 13), (77, 6), (3, 5), (160, 4), (1000, 3), (96, 200), (40, 7), (128, 33)])
    func kernelMatchesRoundedProduct(_ shape: (Int, Int)) {
        let (K, N) = shape
        var rng = Random(seed: UInt64(K * 31 + N))
        let original = randomArray(K * N, &rng), x = randomArray(K, &rng), bias = randomArray(N, &rng)
        var w = original, wt = (0..<(N * K)).map { original[($0 % K) * N + $0 / K] }   // (K,N) and its transpose (N,K)
        let nb = Int8Blocks.blocks(K: K)
        var q = [Int8](repeating: 0, count: N * Int8Blocks.rowBytes(K: K)), s = [Float](repeating: 0, count: N * nb)
        var qt = q, st = s
        Int8Blocks.quantize(columnsOf: &w, K: K, N: N, q: &q, scales: &s)
        var sums = [Float](repeating: .nan, count: N * nb)
        Int8Blocks.quantize(rowsOf: &wt, K: K, N: N, q: &qt, scales: &st, absSums: &sums)
        #expect(q == qt && s == st, "both layouts give the same bytes")
        #expect(sums == absoluteSums(q: qt, K: K, N: N), "Σ|q| per block as the screen counts it from the bytes")
        // Rounding without writing back reads w alone and gives the same bytes; the rounded
        // weight rebuilt from them is what was written back.
        var read = original, q2 = q, s2 = s
        Int8Blocks.quantize(columnsOf: &read, K: K, N: N, q: &q2, scales: &s2, roundingWeights: false)
        #expect(read == original && q2 == q && s2 == s)
        var rebuilt = [Float](repeating: .nan, count: K * N)
        Int8Blocks.dequantize(columnsInto: &rebuilt, K: K, N: N, q: q, scales: s)
        #expect(rebuilt == w, "the rebuilt weight is the rounded one")
        for n in 0..<N {
            for b in 0..<nb {
                let ks = (b * 64)..<min(K, b * 64 + 64)
                let amax = ks.map { abs(original[$0 * N + n]) }.max()!
                #expect(s[n * nb + b] == amax / 127)
                for k in ks {
                    let r = w[k * N + n]
                    #expect(abs(r - original[k * N + n]) <= s[n * nb + b] * 0.5001, "(\(n),\(k))")
                    let scale = s[n * nb + b], inverse: Float = scale > 0 ? 1 / scale : 0
                    #expect(r == (original[k * N + n] * inverse).rounded() * scale, "(\(n),\(k)): halves away from zero")
                    #expect(r == wt[n * K + k])
                    #expect(abs(r / s[n * nb + b]).rounded() <= 127)
                }
            }
        }
        var y = [Float](repeating: 0, count: N), y0 = [Float](repeating: 0, count: N)
        Int8Blocks.vectorForward(&y, x, q: q, scales: s, bias: bias, K: K, N: N)
        Int8Blocks.vectorForward(&y0, x, q: q, scales: s, bias: nil, K: K, N: N)
        var ref = bias
        for n in 0..<N { for k in 0..<K { ref[n] += x[k] * w[k * N + n] } }
        #expect(relativeError(y, ref) < 1e-5)
        #expect(relativeError(zip(y0, bias).map(+), ref) < 1e-5)
    }

    /// Values halfway between two steps of the scale round away from zero in both layouts (a
    /// block holding 127 has scale 1: 2.5 becomes 3, -0.5 becomes -1).
    @Test func halvesRoundAwayFromZero() {
        let K = 64, N = 16
        let value: (Int, Int) -> Float = { n, k in k == 0 ? 127 : Float((k + n) % 20) - 9.5 }
        var w = [Float](repeating: 0, count: K * N), wt = w
        for n in 0..<N { for k in 0..<K { w[k * N + n] = value(n, k); wt[n * K + k] = value(n, k) } }
        var q = [Int8](repeating: 0, count: N * Int8Blocks.rowBytes(K: K)), s = [Float](repeating: 0, count: N)
        var qt = q, st = s
        Int8Blocks.quantize(columnsOf: &w, K: K, N: N, q: &q, scales: &s)
        Int8Blocks.quantize(rowsOf: &wt, K: K, N: N, q: &qt, scales: &st)
        #expect(s == [Float](repeating: 1, count: N) && st == s && qt == q)
        for n in 0..<N {
            for k in 1..<K {
                let v = value(n, k), away = v + (v > 0 ? 0.5 : -0.5)
                #expect(w[k * N + n] == away && wt[n * K + k] == away, "(\(n),\(k)): \(v)")
            }
        }
    }

    /// A model loaded for sampling in 8 bits (`Checkpoint.load` with `[.decoding, .int8]`)
    /// rounds its projections and embeddings straight from the file and never stores them in
    /// fp32 (their place in the parameter buffer stays zero), yet computes the model loaded
    /// whole and rounded (`roundToInt8`) bit for bit: a prompt's batched pass (the projections
    /// rebuilt from their 8 bits, the embeddings' rows and the last position's logits too),
    /// each token after it, and the window's re-runs past the context; from F32 read in place
    /// (rows of 96: a tail of 32) and from an F16 Hugging Face folder (converted first). Loaded
    /// with `.int8` alone, the model is `roundToInt8`'s.
    @Test func int8OnlyLoadComputesTheRoundedModel() throws {
        let c = GPTConfig(nLayer: 2, nHead: 4, nEmbd: 96, blockSize: 24, vocabSize: 70)
        let source = GPTModel(config: c)
        source.initialize(seed: 41)
        let chars = try CharTokenizer(vocabulary: (0..<70).map { Unicode.Scalar(UInt8(40 + $0)) })
        let path = tempDir().appendingPathComponent("m.safetensors").path
        try Checkpoint(model: source, tokenizer: chars).save(path)
        var rng = Random(seed: 42)
        let tokens: [Int32] = (0..<40).map { _ in Int32(rng.nextInt(below: 70)) }
        for file in [path, HuggingFaceTests.root + "/half"] {
            let rounded = try Checkpoint.load(file).model
            rounded.roundToInt8()
            let only = try Checkpoint.load(file, [.decoding, .int8]).model
            #expect(only.int8Only && only.samplingOnly && !rounded.int8Only && !rounded.samplingOnly)
            // The embeddings too, read in place from F32 (F16 is converted in the buffer first).
            let alone = [".c_attn.weight", ".c_proj.weight", ".c_fc.weight"] + (file == path ? ["wte.weight"] : [])
            for t in only.layout.tensors where alone.contains(where: t.name.hasSuffix) {
                let values = UnsafeBufferPointer(start: only.parameters.pointer + t.offset, count: t.count)
                #expect(values.allSatisfy { $0 == 0 }, "\(t.name) stored in fp32")
            }
            let whole = try Checkpoint.load(file, .int8).model
            #expect(!whole.int8Only && whole.parameters.array == rounded.parameters.array)
            let V = only.config.vocabSize, T = only.config.blockSize
            let seq = tokens.map { $0 % Int32(V) }
            let logits = [rounded, only].map { m in
                let decoder = Decoder(model: m)
                var out: [Float] = []
                seq.prefix(9).withUnsafeBufferPointer { decoder.fill($0) }
                out += UnsafeBufferPointer(start: decoder.logits, count: V)
                for n in 9..<min(seq.count, T + 12) {
                    seq.prefix(n + 1).withUnsafeBufferPointer { decoder.advance(token: seq[n], history: $0) }
                    out += UnsafeBufferPointer(start: decoder.logits, count: V)
                }
                return out
            }
            #expect(logits[0].map(\.bitPattern) == logits[1].map(\.bitPattern), "\(file)")
        }
    }

    /// A model held in 8 bits alone computes every position's logits and loss as the whole
    /// model rounded does, to float rounding (its output layer rebuilds the embeddings a block
    /// of rows at a time, vocabulary 300 against blocks of 128 rows: three blocks, the last
    /// short; the sgemm over a block may round its last bits otherwise), and `Evaluator`
    /// (`gen eval --weights int8`) gives the same loss on a text.
    @Test func int8OnlyFullForwardIsTheRoundedModel() throws {
        let c = GPTConfig(nLayer: 2, nHead: 2, nEmbd: 32, blockSize: 16, vocabSize: 300)
        let source = GPTModel(config: c)
        source.initialize(seed: 5)
        let chars = try CharTokenizer(vocabulary: (0..<300).map { Unicode.Scalar(UInt32(0x100 + $0))! })
        let dir = tempDir()
        let path = dir.appendingPathComponent("m.safetensors").path
        try Checkpoint(model: source, tokenizer: chars).save(path)
        let rounded = try Checkpoint.load(path, .int8).model, only = try Checkpoint.load(path, [.decoding, .int8]).model
        #expect(only.int8Only)   // its rebuilt blocks: the largest projection, 32 × 128, over rows of 32
        var rng = Random(seed: 6)
        let B = 3, T = c.blockSize, V = c.vocabSize
        let tokens: [Int32] = (0..<(B * T)).map { _ in Int32(rng.nextInt(below: V)) }
        let targets: [Int32] = (0..<(B * T)).map { _ in Int32(rng.nextInt(below: V)) }
        let results = [rounded, only].map { m -> (Float, [Float], [Float]) in
            let acts = Activations(config: c, B: B, T: T, training: false)
            let loss = GPT.forward(m.views, c, acts, tokens: tokens, targets: targets, B: B, t: T)
            let probabilities = Array(UnsafeBufferPointer(start: acts.logits, count: B * T * V))
            return (loss, probabilities, fullLogits(m, Array(tokens.prefix(T))))
        }
        // The output layer's sgemm runs on other blocks of columns, which may move last bits.
        #expect(abs(results[0].0 - results[1].0) <= 1e-6 * results[0].0 && results[0].0.isFinite)
        #expect(relativeError(results[1].1, results[0].1) < 1e-5)
        #expect(relativeError(results[1].2, results[0].2) < 1e-5)
        // Far tighter than rounding's own change: the unrounded model's logits are not within it.
        #expect(relativeError(fullLogits(try Checkpoint.load(path).model, Array(tokens.prefix(T))), results[0].2) > 1e-3)
        let text = dir.appendingPathComponent("t.txt").path
        try String((0..<100).map { _ in Character(Unicode.Scalar(UInt32(0x100 + rng.nextInt(below: V)))!) })
            .write(toFile: text, atomically: true, encoding: .utf8)
        var skipped = 0
        let data = try TokenData(encoding: [text], with: chars, cacheDirectory: dir.path, skipped: &skipped)
        let evaluated = try [rounded, only].map { try Evaluator(model: $0, threads: 2, batchSize: 2).evaluate(data) }
        #expect(abs(evaluated[0].loss - evaluated[1].loss) <= 1e-6 * evaluated[0].loss)
        #expect(evaluated[1].predictions == 99 && evaluated[1].tokens == evaluated[0].tokens)
    }

    /// A decoder on a model rounded to 8 bits (reading the bytes) gives the logits of the full
    /// forward pass through the rounded fp32 weights; the rounding moves them, but little.
    @Test func decoderMatchesRoundedForward() throws {
        let f = try ParityTests.load("gpt_odd")
        let exact = try loadModel(f.file, config: f.config), model = try loadModel(f.file, config: f.config)
        model.roundToInt8()
        let c = model.config
        var rng = Random(seed: 13)
        let tokens: [Int32] = (0..<c.blockSize).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
        let unrounded = fullLogits(exact, tokens), full = fullLogits(model, tokens)
        #expect(full != unrounded)
        #expect(relativeError(full, unrounded) < 0.05)
        expectDecoderMatches(model, tokens, full)
    }
}
