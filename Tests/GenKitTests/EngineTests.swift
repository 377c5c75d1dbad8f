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
        #expect(BLAS.decide(loaded: "Prescott", flags: avx512) == .restart(coreType: "SkylakeX"))
        #expect(BLAS.decide(loaded: "Haswell", flags: avx512) == .restart(coreType: "SkylakeX"))
        #expect(BLAS.decide(loaded: "Prescott", flags: ["sse3", "avx", "avx2", "fma"]) == .restart(coreType: "Haswell"))
    }

    @Test func rightKernelIsKept() {
        #expect(BLAS.decide(loaded: "SkylakeX", flags: avx512) == .keep)
        #expect(BLAS.decide(loaded: "Cooperlake", flags: avx512) == .keep)
        #expect(BLAS.decide(loaded: "Zen", flags: ["avx2", "fma", "avx"]) == .keep)
        #expect(BLAS.decide(loaded: "Prescott", flags: ["sse3"]) == .keep)
        #expect(BLAS.decide(loaded: "armv8", flags: []) == .keep)
    }

    @Test func forcedKernelWins() {
        #expect(BLAS.decide(loaded: "SkylakeX", flags: avx512, forced: "Prescott") == .restart(coreType: "Prescott"))
        #expect(BLAS.decide(loaded: "Prescott", flags: avx512, forced: "prescott") == .keep)
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
