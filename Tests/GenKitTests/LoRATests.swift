import Foundation
import Testing
import GenKit
import GenKernels

/// LoRA adapters: the layer's backward against finite differences, the model against PEFT
/// (`scripts/lora_reference.py`), frozen weights, merging.
@Suite struct LoRATests {
    static let fixtures = Bundle.module.resourcePath! + "/Fixtures"

    static func model() throws -> GPTModel {
        let ck = try Checkpoint.load(fixtures + "/hf/lmhead")
        ck.model.adapters = try LoRAAdapters.load(folder: fixtures + "/lora/adapter", model: ck.model.config)
        return ck.model
    }

    /// The layer of a PEFT tensor name: every name of PEFT's own fixture file (written by PEFT
    /// for this model) names a layer of the model, each layer has its tensors, and names
    /// outside the pattern have none.
    @Test func tensorNamesGiveTheirLayer() throws {
        let c = try Self.model().config
        let file = try SafeTensorsFile(path: Self.fixtures + "/lora/adapter/adapter_model.safetensors")
        let layers = file.entries.keys.map(LoRAAdapters.layer(ofTensorNamed:))
        #expect(layers.allSatisfy { $0 != nil && $0! < c.nLayer } && Set(layers.compactMap { $0 }).count == c.nLayer, "\(file.entries.keys)")
        #expect(LoRAAdapters.layer(ofTensorNamed: "base_model.model.transformer.h.12.attn.c_attn.lora_A.weight") == 12)
        for name in ["base_model.model.transformer.h..attn.c_attn.lora_A.weight", "base_model.model.transformer.h.1x.attn",
                     "base_model.model.transformer.h.3", "transformer.h.3.attn.c_attn.weight", "base_model.model.transformer.h.٣.attn",
                     "base_model.model.transformer.h.99999999999999999999.attn"] {
            #expect(LoRAAdapters.layer(ofTensorNamed: name) == nil, "\(name)")
        }
    }

    /// The memory check's estimate is what training allocates, with and without the adapters'
    /// input dropout (whose dropped-input scratch it once left out).
    @Test(arguments: [false, true])
    func activationBytesMatchAllocation(loraDropout: Bool) throws {
        let c = try Self.model().config
        let acts = Activations(config: c, B: 2, T: c.blockSize, training: true, loraRank: 4, loraDropout: loraDropout)
        #expect(Activations.bytes(config: c, B: 2, T: c.blockSize, training: true, loraRank: 4, loraDropout: loraDropout)
                == Double(acts.bytes))
    }

    /// Logits, loss and every adapter gradient equal PEFT's; so do the adapters after 10 AdamW steps.
    @Test func matchesPEFT() throws {
        let model = try Self.model()
        let expected = try SafeTensorsFile(path: Self.fixtures + "/lora/expected.safetensors")
        let x = try expected.int32s("inputs"), y = try expected.int32s("targets")
        let B = 2, T = 8
        var logits: [Float] = []
        for b in 0..<B { logits += model.logits(Array(x[(b * T)..<((b + 1) * T)])) }
        #expect(relativeError(logits, try expected.floats("logits")) < 1e-5)
        var s = TrainingSettings()
        s.batchSize = B; s.steps = 10; s.warmup = 0; s.learningRate = 1e-2; s.minLearningRate = 1e-2
        s.beta1 = 0.9; s.beta2 = 0.99; s.weightDecay = 0.1; s.gradClip = 0
        let trainer = Trainer(model: model, settings: s, context: T)
        let base = model.parameters.array
        for i in 0..<(B * T) { trainer.batch.inputs.pointer[i] = x[i]; trainer.batch.targets.pointer[i] = y[i] }
        trainer.gradients.zero()
        let loss = trainer.accumulateGradients(microBatches: 1)
        #expect(abs(loss - (try expected.floats("loss"))[0]) < 1e-5)
        let adapters = model.adapters!
        for t in adapters.tensors {
            let g = Array(UnsafeBufferPointer(start: trainer.gradients.pointer + t.offset, count: t.count))
            #expect(relativeError(g, try expected.floats("grad." + t.name)) < 1e-4, "\(t.name)")
        }
        for _ in 0..<10 { _ = trainer.step(from: KeepBatch()) }
        for t in adapters.tensors {
            let p = Array(UnsafeBufferPointer(start: adapters.parameters.pointer + t.offset, count: t.count))
            #expect(relativeError(p, try expected.floats("after." + t.name)) < 1e-4, "\(t.name)")
        }
        // The base weights are frozen: bit-identical, and no gradient buffer for them.
        #expect(model.parameters.array == base)
        #expect(trainer.gradients.count == adapters.parameters.count)
    }

    /// The merged model's logits equal the base with its adapters.
    @Test func mergeEqualsBasePlusAdapter() throws {
        let model = try Self.model()
        let ids: [Int32] = [5, 17, 250, 3, 99, 1, 42, 7]
        let merged = model.merged()
        #expect(merged.adapters == nil)
        #expect(relativeError(merged.logits(ids), model.logits(ids)) < 1e-5)
        // And the adapters do change the output.
        let plain = try Checkpoint.load(Self.fixtures + "/hf/lmhead").model
        #expect(relativeError(plain.logits(ids), model.logits(ids)) > 1e-3)
    }

    /// Decoding with adapters equals the full forward, after a prompt of one token and after
    /// one of four (whose last block runs the adapters for its last position alone).
    @Test(arguments: [1, 4])
    func decoderUsesAdapters(prompt: Int) throws {
        let model = try Self.model()
        let ids: [Int32] = [5, 17, 250, 3, 99, 1]
        let decoder = Decoder(model: model)
        ids.prefix(prompt).withUnsafeBufferPointer { decoder.fill($0) }
        for k in prompt..<ids.count { decoder.feed(ids[k]) }
        let V = model.config.vocabSize
        let last = Array(UnsafeBufferPointer(start: decoder.logits, count: V))
        #expect(relativeError(last, Array(model.logits(ids).suffix(V))) < 1e-5)
    }

    /// The layer's backward (input, A, B) against central differences of its forward.
    @Test(arguments: [false, true])
    func linearBackwardMatchesFiniteDifferences(dropout: Bool) throws {
        let M = 3, K = 5, N = 4, r = 2
        var rng = Random(seed: 8)
        var w = randomArray(K * N, &rng, scale: 0.5), bias = randomArray(N, &rng, scale: 0.1)
        var a = randomArray(r * K, &rng, scale: 0.5), b = randomArray(N * r, &rng, scale: 0.5)
        var x = randomArray(M * K, &rng)
        let weights = randomArray(M * N, &rng)
        let scaling: Float = 1.5
        // An input-dropout stream with a fixed key, as the trainer draws one per step; its mask
        // drops some entries and keeps others.
        let stream: Dropout.Stream? = dropout ? Dropout.Stream(key: 77, p: 0.3) : nil
        if let stream {
            let mask = dropoutMask(stream, count: M * K)
            #expect(mask.contains(0) && mask.contains(1 / 0.7))
        }
        func run(_ x: [Float], _ a: [Float], _ b: [Float], backward: Bool) -> (Double, [Float], [Float], [Float]) {
            var out = [Float](repeating: 0, count: M * N), u = [Float](repeating: 0, count: M * r)
            var dx = [Float](repeating: 0, count: M * K), da = [Float](repeating: 0, count: r * K), db = [Float](repeating: 0, count: N * r)
            var scratch = [Float](repeating: 0, count: M * r)
            var dropped = [Float](repeating: 0, count: M * K)
            var x = x, a = a, b = b, dout = weights
            w.withUnsafeMutableBufferPointer { wp in bias.withUnsafeMutableBufferPointer { bp in
                a.withUnsafeMutableBufferPointer { ap in b.withUnsafeMutableBufferPointer { bbp in
                    da.withUnsafeMutableBufferPointer { dap in db.withUnsafeMutableBufferPointer { dbp in
                        let lin = Linear(weight: wp.baseAddress!, bias: bp.baseAddress!, K: K, N: N,
                                         lora: LoRAWeights(a: ap.baseAddress!, b: bbp.baseAddress!, r: r, scaling: scaling))
                        dropped.withUnsafeMutableBufferPointer { dp in
                            let dr = dropout ? dp.baseAddress! : nil
                            lin.forward(&out, &x, M: M, u: &u, dropout: stream, dropped: dr)
                            if backward {
                                lin.backward(dinp: &dx, gradient: nil, loraGradient: LoRAWeights(a: dap.baseAddress!, b: dbp.baseAddress!, r: r, scaling: scaling),
                                             dout: &dout, inp: &x, M: M, u: &u, scratch: &scratch, dropout: stream, dropped: dr)
                            }
                        }
                    } }
                } }
            } }
            return (weightedSum(out, weights), dx, da, db)
        }
        let (_, dx, da, db) = run(x, a, b, backward: true)
        let h: Float = 1e-2
        for i in 0..<x.count {
            let n = numericGradient(&x, i, h: h) { run($0, a, b, backward: false).0 }
            #expect(abs(Double(dx[i]) - n) < 2e-3 * max(1, abs(n)), "dx[\(i)]")
        }
        for i in 0..<a.count {
            let n = numericGradient(&a, i, h: h) { run(x, $0, b, backward: false).0 }
            #expect(abs(Double(da[i]) - n) < 2e-3 * max(1, abs(n)), "dA[\(i)]")
        }
        for i in 0..<b.count {
            let n = numericGradient(&b, i, h: h) { run(x, a, $0, backward: false).0 }
            #expect(abs(Double(db[i]) - n) < 2e-3 * max(1, abs(n)), "dB[\(i)]")
        }
    }
}
