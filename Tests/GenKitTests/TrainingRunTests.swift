import Foundation
import Testing
import GenKit
import GenKernels
import TestScratch

/// A `TrainingRun` driven from the library alone: its events, checkpoints, stop and resume,
/// and the seams (what trains, the gradient hook).
@Suite struct TrainingRunTests {
    final class Recorder: TrainingRunDelegate {
        var steps: [Int] = []
        var validated: [Int] = []
        var saved: [Int] = []
        var stopAfter: Int?
        func trainingRun(_ run: TrainingRun, finished r: TrainingRun.StepReport) { steps.append(r.step) }
        func trainingRun(_ run: TrainingRun, validated loss: Float, atStep step: Int) { validated.append(step) }
        func trainingRun(_ run: TrainingRun, saved path: String, atStep step: Int) { saved.append(step) }
        func trainingRunShouldStop(_ run: TrainingRun) -> Bool { run.trainer.step == stopAfter }
    }

    struct Setup {
        let dir: URL
        let data: TokenData
        let tokenizer: Tokenizer
        let config: GPTConfig
        var settings = TrainingSettings()
        var options = TrainingRun.Options()

        init() throws {
            dir = tempDir()
            let path = dir.appendingPathComponent("c.txt").path
            var rng = Random(seed: 9)
            let words = ["the ", "lord ", "said ", "unto ", "moses ", "and ", "aaron ", "\n"]
            try (0..<3000).map { _ in words[rng.nextInt(below: words.count)] }.joined().write(toFile: path, atomically: true, encoding: .utf8)
            tokenizer = try charVocabulary(of: [path])
            var skipped = 0
            data = try TokenData(encoding: [path], with: tokenizer, cacheDirectory: dir.path, skipped: &skipped)
            config = GPTConfig(nLayer: 2, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: tokenizer.vocabSize)
            settings.batchSize = 4
            settings.steps = 12
            settings.warmup = 2
            options.evalEvery = 5
            options.evalBatches = 2
            options.threads = 2
        }

        func model() -> GPTModel {
            let m = GPTModel(config: config)
            m.initialize(seed: 3)
            return m
        }

        func run(_ model: GPTModel, path: String, every: Int = 4) -> TrainingRun {
            TrainingRun(model: model, settings: settings, data: data, trainTokens: data.count * 9 / 10, options: options,
                        checkpoint: CheckpointPolicy(path: path, every: every, tokenizer: tokenizer))
        }
    }

    @Test func runsReportsSavesStopsAndResumesExactly() throws {
        let s = try Setup()
        // Uninterrupted.
        let full = s.model()
        let a = s.run(full, path: s.dir.appendingPathComponent("a.safetensors").path)
        let rec = Recorder()
        a.delegate = rec
        #expect(try a.run() == .finished)
        #expect(rec.steps == Array(1...12))
        #expect(rec.validated == [5, 10, 12])
        #expect(rec.saved == [4, 8, 12])
        #expect(a.lastLoss.isFinite && a.lastValidationLoss != nil)

        // Stopped after step 6 (saved there), then resumed from the files in a new run.
        let path = s.dir.appendingPathComponent("b.safetensors").path
        let b = s.run(s.model(), path: path)
        let stopper = Recorder()
        stopper.stopAfter = 6
        b.delegate = stopper
        #expect(try b.run() == .stopped(step: 6))
        #expect(stopper.saved == [4, 6])
        let ck = try Checkpoint.load(path)
        #expect(ck.metadata["step"] == "6")
        let c = s.run(ck.model, path: path)
        try c.resume(modelMetadata: ck.metadata)
        #expect(c.trainer.step == 6)
        #expect(try c.run() == .finished)
        #expect(ck.model.parameters.array == full.parameters.array)
    }

    /// The hook sees the accumulated gradients before clipping: their norm is the step's.
    @Test func gradientHookRunsBeforeClipping() throws {
        var s = try Setup()
        s.settings.gradClip = 1e-3   // every step clips
        s.settings.steps = 3
        let run = s.run(s.model(), path: s.dir.appendingPathComponent("h.safetensors").path)
        var norms: [Float] = []
        run.trainer.gradientHook = { g in
            var sum: Double = 0
            for x in g.array { sum += Double(x) * Double(x) }
            norms.append(Float(sum.squareRoot()))
        }
        final class Norms: TrainingRunDelegate {
            var values: [Float] = []
            func trainingRun(_ run: TrainingRun, finished r: TrainingRun.StepReport) { values.append(r.gradNorm) }
        }
        let n = Norms()
        run.delegate = n
        _ = try run.run()
        #expect(norms.count == 3)
        for (h, r) in zip(norms, n.values) { #expect(abs(h - r) <= 1e-4 * r && r > 1e-3) }
    }

    /// Weights that stop being finite are never saved: the run ends with an error and the
    /// checkpoint before stays (an update can make them so while the loss it follows was fine).
    @Test func nonFiniteWeightsAreNeverSaved() throws {
        let s = try Setup()
        let path = s.dir.appendingPathComponent("n.safetensors").path
        let run = s.run(s.model(), path: path, every: 1)
        final class Poison: TrainingRunDelegate {
            func trainingRun(_ run: TrainingRun, finished r: TrainingRun.StepReport) {
                if r.step == 3 { run.trainer.model.parameters.pointer[5] = .nan }
            }
        }
        let poison = Poison()
        run.delegate = poison
        #expect(throws: GenError.self) { try run.run() }
        let ck = try Checkpoint.load(path)
        #expect(ck.metadata["step"] == "2" && ck.model.parameters.array.allSatisfy { $0.isFinite })
    }

    /// A run that trains only some tensors leaves every other weight bit-identical, keeps
    /// AdamW moments for the trained floats only, and still lowers the loss.
    @Test func frozenTensorsStayBitIdentical() throws {
        var s = try Setup()
        s.settings.steps = 8
        s.settings.learningRate = 1e-2
        let model = s.model()
        let before = model.parameters.array
        let trains: (ParameterLayout.Tensor) -> Bool = { $0.name.hasPrefix("ln_f") || $0.name.hasPrefix("h.1.mlp") }
        let set = TrainableSet(model.layout, trains: trains)
        let run = TrainingRun(model: model, settings: s.settings, data: s.data, trainTokens: s.data.count * 9 / 10,
                              options: s.options, trainable: set)
        #expect(run.trainer.m.count == set.count && set.count < model.parameterCount / 2)
        _ = try run.run()
        let after = model.parameters.array
        var changed = 0
        for t in model.layout.tensors {
            let same = before[t.offset..<(t.offset + t.count)] == after[t.offset..<(t.offset + t.count)]
            if trains(t) { if !same { changed += 1 } } else { #expect(same, "\(t.name) changed") }
        }
        #expect(changed >= 4)
    }

    /// The benchmark refuses step counts it cannot keep a time for (it keeps one per measured
    /// step) and batches that cannot run, in one line, and measures the steps it is given.
    @Test func benchmarkChecksStepsAndBatch() throws {
        let config = GPTConfig(nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 8, vocabSize: 11)
        var settings = TrainingSettings()
        settings.batchSize = 2
        for (steps, warmup, setting) in [(0, 0, "steps"), (-1, 0, "steps"), (Int.max, 0, "steps"),
                                          (TrainingBenchmark.maxSteps + 1, 0, "steps"), (1, -1, "warmup"), (1, Int.min, "warmup")] {
            do {
                _ = try TrainingBenchmark.run(config: config, settings: settings, steps: steps, warmup: warmup, threads: 1)
                Issue.record("steps \(steps), warmup \(warmup) ran")
            } catch let e as GenError {
                #expect(e.setting == setting && !e.message.contains("\n"), "\(e.message)")
            }
        }
        // A batch of none, or one that cannot fit in memory, is refused before anything is allocated.
        for (batch, words) in [(0, "batch size must be 1 or more"), (-5, "batch size must be 1 or more"), (1 << 40, "needs"),
                                (Int.max, "needs")] {
            var s = settings
            s.batchSize = batch
            do {
                _ = try TrainingBenchmark.run(config: config, settings: s, steps: 1, warmup: 0, threads: 1)
                Issue.record("batch \(batch) ran")
            } catch let e as GenError {
                #expect(e.message.contains(words) && !e.message.contains("\n"), "\(e.message)")
            }
        }
        // A model that cannot be built is refused as such, with adapters too (they are laid out from it).
        for lora in [nil, LoRAConfig(rank: 2, alpha: 4)] as [LoRAConfig?] {
            do {
                _ = try TrainingBenchmark.run(config: GPTConfig(nLayer: -1, nHead: 2, nEmbd: 16, blockSize: 8, vocabSize: 11),
                                              settings: settings, steps: 1, warmup: 0, threads: 1, lora: lora)
                Issue.record("a model of -1 layers ran")
            } catch let e as GenError {
                #expect(e.setting == "layers", "\(e.message)")
            }
        }
        let r = try TrainingBenchmark.run(config: config, settings: settings, steps: 3, warmup: 1, threads: 1)
        #expect(r.tokensPerSecond > 0 && r.tokensPerSecond.isFinite && r.millisecondsPerStep > 0 && r.loss.isFinite)
    }
}
