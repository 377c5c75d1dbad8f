import Foundation
import Testing
import GenKit
import GenKernels

/// The whole model against `scripts/reference.py` (PyTorch) on the same weights and batch:
/// logits and loss within 1e-5, every parameter's gradient within 1e-4, and every parameter
/// after 10 AdamW steps (with clipping and weight decay) within 1e-4. Errors are relative in
/// the max norm: max|gen − torch| / max|torch| over each tensor.
@Suite struct ParityTests {
    struct Fixture {
        let file: SafeTensorsFile
        let config: GPTConfig
        let B: Int, T: Int
        let inputs: [Int32], targets: [Int32]
    }

    static func load(_ name: String) throws -> Fixture {
        let file = try SafeTensorsFile(path: fixturePath(name))
        let config = try fixtureConfig(file)
        return Fixture(file: file, config: config, B: Int(file.metadata["batch"]!)!, T: Int(file.metadata["context"]!)!,
                       inputs: try file.int32s("inputs"), targets: try file.int32s("targets"))
    }

    @Test(arguments: ["gpt_tiny", "gpt_odd"])
    func forwardBackwardAndTenSteps(name: String) throws {
        let f = try Self.load(name)
        let model = try loadModel(f.file, config: f.config)
        let opt = try JSONSerialization.jsonObject(with: Data(f.file.metadata["optimizer"]!.utf8)) as! [String: Any]
        var settings = TrainingSettings()
        settings.batchSize = f.B
        settings.learningRate = Float(opt["lr"] as! Double)
        settings.minLearningRate = settings.learningRate
        settings.warmup = 0
        settings.steps = 1_000_000
        settings.beta1 = Float(opt["beta1"] as! Double)
        settings.beta2 = Float(opt["beta2"] as! Double)
        settings.eps = Float(opt["eps"] as! Double)
        settings.weightDecay = Float(opt["weight_decay"] as! Double)
        settings.gradClip = Float(opt["grad_clip"] as! Double)
        let trainer = Trainer(model: model, settings: settings, context: f.T)
        trainer.batch.inputs.pointer.update(from: f.inputs, count: f.inputs.count)
        trainer.batch.targets.pointer.update(from: f.targets, count: f.targets.count)

        // Logits (forward without targets keeps them raw), then loss and gradients.
        GPT.forward(model.views, f.config, trainer.activations, tokens: trainer.batch.inputs.pointer, targets: nil, B: f.B, t: f.T)
        let logits = Array(UnsafeBufferPointer(start: trainer.activations.logits, count: f.B * f.T * f.config.vocabSize))
        #expect(relativeError(logits, try f.file.floats("logits")) < 1e-5)

        trainer.gradients.zero()
        let loss = trainer.accumulateGradients(microBatches: 1)
        let refLoss = try f.file.floats("loss")[0]
        #expect(abs(loss - refLoss) / refLoss < 1e-5)
        for t in model.layout.tensors {
            let g = Array(UnsafeBufferPointer(start: trainer.gradients.pointer + t.offset, count: t.count))
            let err = relativeError(g, try f.file.floats("grad." + t.name))
            #expect(err < 1e-4, "gradient of \(t.name): \(err)")
        }

        // Ten AdamW steps on the same batch.
        let refLosses = try f.file.floats("step_losses")
        for s in 0..<10 {
            let r = trainer.step(from: KeepBatch())
            #expect(abs(r.loss - refLosses[s]) / refLosses[s] < 1e-5, "loss at step \(s)")
        }
        for t in model.layout.tensors {
            let p = Array(UnsafeBufferPointer(start: model.parameters.pointer + t.offset, count: t.count))
            let err = relativeError(p, try f.file.floats("after." + t.name))
            #expect(err < 1e-4, "\(t.name) after 10 steps: \(err)")
        }
    }

    /// The whole model's loss gradient against central differences, for a tiny config, without
    /// and with dropout (masks drawn once, then held fixed for the differences).
    @Test(arguments: [Float(0), 0.2])
    func modelGradientMatchesFiniteDifferences(dropout: Float) throws {
        let config = GPTConfig(nLayer: 2, nHead: 2, nEmbd: 8, blockSize: 6, vocabSize: 11)
        let model = GPTModel(config: config)
        model.initialize(seed: 3)
        // Larger weights than GPT-2's init so every path carries a visible gradient.
        var rng = Random(seed: 9)
        for i in 0..<model.parameterCount { model.parameters.pointer[i] += Float(rng.nextNormal() * 0.3) }
        var settings = TrainingSettings()
        settings.batchSize = 2
        settings.dropout = dropout
        let trainer = Trainer(model: model, settings: settings, context: 6)
        for i in 0..<12 {
            trainer.batch.inputs.pointer[i] = Int32(rng.nextInt(below: 11))
            trainer.batch.targets.pointer[i] = Int32(rng.nextInt(below: 11))
        }
        trainer.gradients.zero()
        _ = trainer.accumulateGradients(microBatches: 1)
        let analytic = trainer.gradients.array
        func loss() -> Double {
            Double(GPT.forward(model.views, config, trainer.activations, tokens: trainer.batch.inputs.pointer,
                               targets: trainer.batch.targets.pointer, B: 2, t: 6))
        }
        var numeric: [Float] = []
        var checked: [Float] = []
        // Every 7th parameter: all tensors are covered.
        for i in stride(from: 0, to: model.parameterCount, by: 7) {
            let p = model.parameters.pointer + i
            let saved = p.pointee
            let h: Float = 1e-2
            p.pointee = saved + h
            let up = loss()
            p.pointee = saved - h
            let down = loss()
            p.pointee = saved
            numeric.append(Float((up - down) / Double(2 * h)))
            checked.append(analytic[i])
        }
        #expect(relativeError(checked, numeric) < 2e-2)
    }
}
