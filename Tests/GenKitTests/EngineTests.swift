import Foundation
import Testing
import GenKit
import GenKernels
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct EngineTests {
    /// Training on a fixed batch drives the loss down (the optimizer and schedule work together).
    @Test func lossFallsOnAFixedBatch() {
        let config = GPTConfig(nLayer: 2, nHead: 2, nEmbd: 32, blockSize: 16, vocabSize: 20)
        let model = GPTModel(config: config)
        model.initialize(seed: 5)
        var settings = TrainingSettings()
        settings.batchSize = 2
        settings.steps = 60
        settings.learningRate = 1e-2
        settings.warmup = 5
        let trainer = Trainer(model: model, settings: settings)
        for i in 0..<32 { trainer.batch.inputs.pointer[i] = Int32(i % 20); trainer.batch.targets.pointer[i] = Int32((i * 7) % 20) }
        let first = trainer.step(from: KeepBatch()).loss
        var last = first
        for _ in 0..<59 { last = trainer.step(from: KeepBatch()).loss }
        #expect(first > 2.5)
        #expect(last < 0.5 * first)
    }

    /// A forward pass on one layer's activations reused by every layer (`oneLayer`: evaluation,
    /// log-probabilities) gives the loss and probabilities of one that keeps every layer's, bit
    /// for bit, with and without adapters; with fewer rows of logits than positions, the same
    /// loss to float rounding; each holds what `Activations.bytes` says (at GPT-2 124M's
    /// evaluation shape a third, and a tenth with 512 rows of logits).
    @Test func oneLayerActivationsComputeTheSameForward() throws {
        let plain = GPTModel(config: GPTConfig(nLayer: 3, nHead: 2, nEmbd: 32, blockSize: 16, vocabSize: 50))
        plain.initialize(seed: 8)
        for model in [plain, try LoRATests.model()] {
            let c = model.config, B = 2, T = min(8, c.blockSize)
            var rng = Random(seed: 9)
            let tokens = (0..<(B * T)).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
            let targets = (0..<(B * T)).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
            let runs = [false, true].map { one -> (Float, [Float]) in
                let acts = Activations(model: model, B: B, T: T, training: false, oneLayer: one)
                #expect(Double(acts.bytes) == Activations.bytes(config: c, B: B, T: T, training: false, oneLayer: one,
                                                                loraRank: model.loraRank))
                let loss = GPT.forward(model.views, c, acts, tokens: tokens, targets: targets, B: B, t: T)
                return (loss, Array(UnsafeBufferPointer(start: acts.logits, count: B * T * c.vocabSize)))
            }
            #expect(c.nLayer > 1 && (model.adapters != nil) == (model !== plain))
            #expect(runs[0].0.bitPattern == runs[1].0.bitPattern && runs[0].0.isFinite)
            #expect(runs[0].1.map(\.bitPattern) == runs[1].1.map(\.bitPattern))
            // Five rows of logits held: the output layer and the loss in blocks of 5, 5, 5 and 1
            // rows (the sgemm over a block may round last bits otherwise).
            let few = Activations(model: model, B: B, T: T, training: false, oneLayer: true, logitRows: 5)
            #expect(Double(few.bytes) == Activations.bytes(config: c, B: B, T: T, training: false, oneLayer: true,
                                                           logitRows: 5, loraRank: model.loraRank))
            let loss = GPT.forward(model.views, c, few, tokens: tokens, targets: targets, B: B, t: T)
            #expect(abs(loss - runs[0].0) <= 1e-6 * runs[0].0, "\(loss) against \(runs[0].0)")
        }
        // GPT-2 124M's evaluation, 8 windows of 1024: about 2.2 GB against 7.1 GB.
        let g = GPTConfig(nLayer: 12, nHead: 12, nEmbd: 768, blockSize: 1024, vocabSize: 50257)
        #expect(Activations.bytes(config: g, B: 8, T: 1024, training: false, oneLayer: true)
                < 0.35 * Activations.bytes(config: g, B: 8, T: 1024, training: false))
        // and with 512 rows of logits (`gen eval`'s) under 0.1: about 0.6 GB.
        #expect(Activations.bytes(config: g, B: 8, T: 1024, training: false, oneLayer: true, logitRows: 512)
                < 0.1 * Activations.bytes(config: g, B: 8, T: 1024, training: false))
    }

    @Test func learningRateSchedule() {
        var s = TrainingSettings()
        s.learningRate = 1e-3; s.minLearningRate = 1e-4; s.warmup = 100; s.steps = 2000
        #expect(abs(s.learningRate(atStep: 0) - 1e-3 / 101) < 1e-9)
        #expect(abs(s.learningRate(atStep: 100) - 1e-3) < 1e-9)
        #expect(abs(s.learningRate(atStep: 1050) - 5.5e-4) < 1e-7)
        #expect(abs(s.learningRate(atStep: 2000) - 1e-4) < 1e-9)
    }

    /// Gradient accumulation over k micro-batches equals one batch k times as large.
    @Test func accumulationEqualsLargerBatch() {
        let config = GPTConfig(nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 8, vocabSize: 13)
        var rng = Random(seed: 4)
        let data: [Int32] = (0..<64).map { _ in Int32(rng.nextInt(below: 13)) }
        func gradients(batch: Int, accumulation: Int) -> [Float] {
            let model = GPTModel(config: config)
            model.initialize(seed: 7)
            var s = TrainingSettings()
            s.batchSize = batch
            s.accumulation = accumulation
            let trainer = Trainer(model: model, settings: s)
            var micro = 0
            trainer.gradients.zero()
            for _ in 0..<accumulation {
                for i in 0..<(batch * 8) {
                    trainer.batch.inputs.pointer[i] = data[micro * batch * 8 + i]
                    trainer.batch.targets.pointer[i] = data[(micro * batch * 8 + i + 1) % 64]
                }
                micro += 1
                _ = trainer.accumulateGradients(microBatches: accumulation)
            }
            return trainer.gradients.array
        }
        #expect(relativeError(gradients(batch: 2, accumulation: 2), gradients(batch: 4, accumulation: 1)) < 1e-5)
    }
}

/// The choice of OpenBLAS kernel.
@Suite struct BLASTests {
    let avx512: Set<String> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]

    @Test func fallbackKernelIsReplaced() {
        #expect(BLAS.decide(loaded: "Prescott", flags: avx512) == .reload(coreType: "SkylakeX"))
        #expect(BLAS.decide(loaded: "Haswell", flags: avx512) == .reload(coreType: "SkylakeX"))
        #expect(BLAS.decide(loaded: "Prescott", flags: ["sse3", "avx", "avx2", "fma"]) == .reload(coreType: "Haswell"))
    }

    @Test func rightKernelIsKept() {
        #expect(BLAS.decide(loaded: "SkylakeX", flags: avx512) == .keep)
        #expect(BLAS.decide(loaded: "Cooperlake", flags: avx512) == .keep)
        #expect(BLAS.decide(loaded: "Zen", flags: ["avx2", "fma", "avx"]) == .keep)
        #expect(BLAS.decide(loaded: "Prescott", flags: ["sse3"]) == .keep)
        #expect(BLAS.decide(loaded: "armv8", flags: []) == .keep)
    }

    /// Who multiplies: gen's own product in builds that have it (512-bit vectors, or AVX2 and
    /// FMA) on CPUs other than Intel's, or as GEN_MATMUL says; never in builds without it.
    @Test func productChoice() {
        #expect(Matmul.ownProduct(choice: nil, built: true, intel: false))
        #expect(!Matmul.ownProduct(choice: nil, built: true, intel: true))
        #expect(!Matmul.ownProduct(choice: nil, built: false, intel: false))
        #expect(Matmul.ownProduct(choice: "own", built: true, intel: true))
        #expect(!Matmul.ownProduct(choice: "own", built: false, intel: true))
        #expect(!Matmul.ownProduct(choice: "openblas", built: true, intel: false))
        #expect(Matmul.ownProduct(choice: "other", built: true, intel: false))
    }

    @Test func forcedKernelWins() {
        #expect(BLAS.decide(loaded: "SkylakeX", flags: avx512, forced: "Prescott") == .reload(coreType: "Prescott"))
        #expect(BLAS.decide(loaded: "Prescott", flags: avx512, forced: "prescott") == .keep)
    }

    /// A forced kernel wider than the CPU's vector unit is refused, not run into an illegal
    /// instruction; narrower ones and unknown names are allowed.
    @Test func forcedKernelMustRunHere() {
        let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]
        #expect(throws: BLAS.LoadError.self) { try BLAS.checkRunnable(forced: "SkylakeX", flags: avx2) }
        #expect(throws: BLAS.LoadError.self) { try BLAS.checkRunnable(forced: "Haswell", flags: ["sse3"]) }
        #expect(throws: Never.self) { try BLAS.checkRunnable(forced: "SkylakeX", flags: avx512) }
        #expect(throws: Never.self) { try BLAS.checkRunnable(forced: "Prescott", flags: avx2) }
        #expect(throws: Never.self) { try BLAS.checkRunnable(forced: "Zen", flags: avx2) }
        #expect(throws: Never.self) { try BLAS.checkRunnable(forced: "armv8", flags: []) }
    }

    @Test func cpuinfoFlagsAreRead() {
        let text = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse3 avx2 fma avx512f\nbogomips\t: 1\n"
        #expect(BLAS.cpuFlags(cpuinfo: text) == ["fpu", "sse3", "avx2", "fma", "avx512f"])
        #expect(!BLAS.cpuFlags().isEmpty)
    }

    /// The library this process loaded reports a kernel name that `decide` understands.
    @Test func loadedKernelIsKnown() {
        #expect(!BLAS.coreName.isEmpty && BLAS.coreName != "unknown")
    }
}

/// The sampler ranks only candidates (a heap) for top-k, top-p and min-p: it must pick what
/// ranking the whole vocabulary picks, for the same random draw.
@Suite struct SamplerTests {
    /// The rules written out over a full sort (most likely first, ties by lower id): top-k
    /// first, then min-p and top-p over the probabilities among the k kept (as Hugging Face's
    /// and llama.cpp's samplers apply them).
    static func reference(_ logits: [Float], _ p: SamplingParameters, _ r: Float) -> Int32 {
        let m = logits.map { $0 / p.temperature }.max()!
        let e = logits.map { exp(Double($0 / p.temperature - m)) }
        let order0 = e.indices.sorted { e[$0] > e[$1] || (e[$0] == e[$1] && $0 < $1) }
        let kept = p.topK > 0 ? Set(order0.prefix(p.topK)) : Set(order0)
        let z = kept.reduce(0.0) { $0 + e[$1] }
        let probs = e.indices.map { kept.contains($0) ? e[$0] / z : 0 }
        let order = order0
        var keep = p.topK > 0 ? min(p.topK, order.count) : order.count
        if p.minP > 0 {
            var k = 0
            while k < keep && probs[order[k]] >= probs[order[0]] * Double(p.minP) { k += 1 }
            keep = max(1, k)
        }
        if p.topP < 1 {
            var acc = 0.0, k = 0
            while k < keep { acc += probs[order[k]]; k += 1; if acc >= Double(p.topP) { break } }
            keep = max(1, k)
        }
        let total = order.prefix(keep).reduce(0.0) { $0 + probs[$1] }
        var acc = 0.0
        for k in 0..<keep { acc += probs[order[k]]; if Double(r) * total < acc { return Int32(order[k]) } }
        return Int32(order[keep - 1])
    }

    @Test func candidatesPickWhatAFullRankingPicks() {
        let V = 3000
        var rng = Random(seed: 77)
        var settings: [SamplingParameters] = []
        for (k, topP, minP, t) in [(0, Float(0.9), Float(0), Float(1)), (40, 1, 0, 1), (0, 1, 0.05, 1), (10, 0.5, 0, 0.7),
                                   (0, 0.999, 0, 2), (0, 0.95, 0.01, 3), (2000, 1, 0, 1), (50, 0.95, 0, 1),
                                   (40, 0.9, 0.05, 1.2), (2000, 0.9, 0, 1), (30, 1, 0.2, 0.8)] {
            var p = SamplingParameters()
            p.topK = k; p.topP = topP; p.minP = minP; p.temperature = t
            settings.append(p)
        }
        var differences = 0, fallbacks = 0
        for p in settings {
            let sampler = Sampler(vocabSize: V, parameters: p, seed: 1)
            for trial in 0..<40 {
                // Peaked logits, flat ones, and ties.
                let scale: Float = trial % 3 == 0 ? 0.1 : 4
                var logits = (0..<V).map { _ in Float(rng.nextNormal()) * scale }
                if trial % 5 == 0 { for i in stride(from: 0, to: V, by: 7) { logits[i] = 3 } }
                var copy = sampler.random
                let r = copy.nextFloat()
                let expected = Self.reference(logits, p, r)
                let got = logits.withUnsafeBufferPointer { b in
                    var l = Array(b)
                    return l.withUnsafeMutableBufferPointer { sampler.sample($0.baseAddress!, recent: []) }
                }
                if got != expected { differences += 1 }
                if p.topK == 0 && p.topP > 0.99 { fallbacks += 1 }
            }
        }
        #expect(differences == 0)
        #expect(fallbacks > 0)
    }
}

@Suite struct DropoutMaskTests {
    /// The reference: SplitMix64's output function for entry i of stream `key`, its top 24
    /// bits as a float in [0, 1), compared with p as the serial generator compares.
    static func reference(key: UInt64, index i: Int, p: Float) -> Float {
        var z = key &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) * (1.0 / 16_777_216.0) < p ? 0 : 1 / (1 - p)
    }

    /// Every entry equals the scalar reference, on one thread and on three (the split does
    /// not change a value), with the fraction dropped near p.
    @Test(arguments: [Float(0.1), 0.5, 0.0])
    func maskEqualsReferenceOnAnyThreadCount(p: Float) {
        let n = 100_003, key: UInt64 = 0xDEAD_BEEF_1234
        let one = Parallel.withThreads(1) { dropoutMask(Dropout.Stream(key: key, p: p), count: n) }
        let three = Parallel.withThreads(3) { dropoutMask(Dropout.Stream(key: key, p: p), count: n) }
        var mismatches = 0, dropped = 0
        for i in 0..<n {
            if one[i] != Self.reference(key: key, index: i, p: p) || three[i] != one[i] { mismatches += 1 }
            if one[i] == 0 { dropped += 1 }
        }
        #expect(mismatches == 0)
        // Binomial(n, p): within 5 standard deviations.
        let sd = (Double(n) * Double(p) * Double(1 - p)).squareRoot()
        #expect(abs(Double(dropped) - Double(n) * Double(p)) <= 5 * sd + 1)
    }

    /// Another key gives another mask; scaling part of a row by the stream (from entry
    /// `first`) equals multiplying by the whole mask's entries there.
    @Test func keysDifferAndScalingEqualsTheMask() {
        let n = 4096, p: Float = 0.3
        let a = dropoutMask(Dropout.Stream(key: 1, p: p), count: n), b = dropoutMask(Dropout.Stream(key: 2, p: p), count: n)
        #expect((0..<n).filter { a[$0] != b[$0] }.count > n / 4)
        var rng = Random(seed: 4)
        let x = (0..<n).map { _ in Float(rng.nextNormal()) }
        let scaled = FloatBuffer(count: n)
        for i in 0..<n { scaled.pointer[i] = x[i] }
        let s = Dropout.Stream(key: 1, p: p)
        s.scale(scaled.pointer, count: 1000, first: 0)
        s.scale(scaled.pointer + 1000, count: n - 1000, first: 1000)
        #expect((0..<n).allSatisfy { scaled.pointer[$0] == x[$0] * a[$0] })
    }
}
