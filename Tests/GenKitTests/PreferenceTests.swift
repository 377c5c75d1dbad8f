import Foundation
import Testing
import GenKit
import GenKernels

/// DPO against `scripts/dpo_reference.py` (PyTorch, the loss written from its formula and,
/// when TRL is installed, checked against TRL's `dpo_loss`), on gpt_tiny's weights and four
/// pairs whose prompts and completions differ in length: per-sequence log-probabilities and
/// the loss within 1e-5, every parameter's gradient within 1e-4 (max-norm relative errors).
@Suite struct PreferenceTests {
    struct Fixture {
        let file: SafeTensorsFile
        let model: GPTModel
        let pairs: [PreferencePair]
        let T: Int
        let beta: Float
    }

    static func load() throws -> Fixture {
        let file = try SafeTensorsFile(path: fixturePath("dpo"))
        let model = try loadModel(try SafeTensorsFile(path: fixturePath("gpt_tiny")), config: try fixtureConfig(file))
        let n = Int(file.metadata["pairs"]!)!
        let pairs = try (0..<n).map { k in
            PreferencePair(prompt: try file.int32s("prompt.\(k)"), chosen: try file.int32s("chosen.\(k)"), rejected: try file.int32s("rejected.\(k)"))
        }
        return Fixture(file: file, model: model, pairs: pairs, T: Int(file.metadata["context"]!)!, beta: Float(file.metadata["beta"]!)!)
    }

    @Test func sequenceLogProbabilities() throws {
        let f = try Self.load()
        // Two pairs per batch: the last batch is the fourth pair alone... and the third.
        let logps = try DirectPreferenceLoss.referenceLogProbs(model: f.model, pairs: f.pairs, context: f.T, pairsPerBatch: 3, threads: 2)
        let expected = try f.file.doubles("policy")
        #expect(logps.count == expected.count)
        for i in 0..<expected.count {
            #expect(abs(logps[i] - expected[i]) <= 1e-5 * max(1, abs(expected[i])), "sequence \(i): \(logps[i]) vs \(expected[i])")
        }
    }

    @Test func lossAndGradients() throws {
        let f = try Self.load()
        var settings = TrainingSettings()
        settings.batchSize = 2 * f.pairs.count
        let objective = DirectPreferenceLoss(beta: f.beta, reference: try f.file.doubles("reference"), B: settings.batchSize, T: f.T)
        let trainer = Trainer(model: f.model, settings: settings, context: f.T, objective: objective)
        PreferenceBatches(f.pairs, indices: Array(f.pairs.indices), seed: nil).fill(trainer.batch)
        trainer.gradients.zero()
        let loss = trainer.accumulateGradients(microBatches: 1)
        let expected = try f.file.doubles("loss")[0]
        #expect(abs(Double(loss) - expected) / expected < 1e-5, "loss \(loss) vs \(expected)")
        for t in f.model.layout.tensors {
            let g = Array(UnsafeBufferPointer(start: trainer.gradients.pointer + t.offset, count: t.count))
            let err = relativeError(g, try f.file.floats("grad." + t.name))
            #expect(err < 1e-4, "gradient of \(t.name): \(err)")
        }
        let m = objective.take(validation: false)
        let rewards = try f.file.doubles("rewards")
        let values = Dictionary(uniqueKeysWithValues: m.values)
        #expect(m.pairs == f.pairs.count)
        for (i, key) in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"].enumerated() {
            #expect(abs(values[key]! - rewards[i]) < 1e-6, "\(key): \(values[key]!) vs \(rewards[i])")
        }
        // A validation pass gives the same loss and leaves the training sums alone.
        PreferenceBatches(f.pairs, indices: Array(f.pairs.indices), seed: nil).fill(trainer.batch)
        #expect(abs(Double(trainer.objective.loss(f.model, trainer.activations, trainer.batch)) - expected) / expected < 1e-5)
        #expect(objective.take(validation: false).pairs == 0)
        #expect(objective.take(validation: true).pairs == f.pairs.count)
    }

    /// Steps lower the loss on the pairs they see, and the policy starts equal to its reference.
    @Test func stepsRaiseTheMargin() throws {
        let f = try Self.load()
        var settings = TrainingSettings()
        settings.batchSize = 2 * f.pairs.count
        settings.learningRate = 1e-2
        settings.minLearningRate = 1e-2
        settings.warmup = 0
        settings.steps = 100
        let reference = try DirectPreferenceLoss.referenceLogProbs(model: f.model, pairs: f.pairs, context: f.T, pairsPerBatch: 4)
        let objective = DirectPreferenceLoss(beta: f.beta, reference: reference, B: settings.batchSize, T: f.T)
        let trainer = Trainer(model: f.model, settings: settings, context: f.T, objective: objective)
        let source = PreferenceBatches(f.pairs, indices: Array(f.pairs.indices), seed: nil)
        let first = trainer.step(from: source)
        #expect(abs(first.loss - Float(log(2.0))) < 1e-5)   // πθ = πref: every z is 0
        var last = first
        for _ in 0..<10 { last = trainer.step(from: source) }
        #expect(last.loss < first.loss * 0.9)
        _ = objective.take(validation: false)
        _ = trainer.step(from: source)
        let margin = Dictionary(uniqueKeysWithValues: objective.take(validation: false).values)["rewards/margins"]!
        #expect(margin > 0)
    }

    /// TRL's rule: completions end with <|endoftext|>, an empty prompt is <|endoftext|>; a pair
    /// too long for the context loses the prompt's start (keeping a token), then the completions' ends.
    @Test func tokenizingAndTruncating() throws {
        let chars = try CharTokenizer(vocabulary: Array("abcdefgh".unicodeScalars))
        let (short, cut0) = try PreferenceData.tokenize(prompt: "ab", chosen: "cd", rejected: "e", tokenizer: chars, context: 8)
        #expect(!cut0 && short == PreferencePair(prompt: [0, 1], chosen: [2, 3], rejected: [4]))
        // context 5: at most 6 tokens; the longer completion has 4, so the prompt keeps 2.
        let (p, cut1) = try PreferenceData.tokenize(prompt: "abcdef", chosen: "gggg", rejected: "h", tokenizer: chars, context: 5)
        #expect(cut1 && p == PreferencePair(prompt: [4, 5], chosen: [6, 6, 6, 6], rejected: [7]))
        // context 3: the prompt keeps one token, the completions three.
        let (q, _) = try PreferenceData.tokenize(prompt: "abc", chosen: "ddddd", rejected: "ee", tokenizer: chars, context: 3)
        #expect(q == PreferencePair(prompt: [2], chosen: [3, 3, 3], rejected: [4, 4]))

        let text = "{\"prompt\":\"ab\",\"chosen\":\"c\",\"rejected\":\"d\"}\n\n{\"prompt\":\"a\",\"chosen\":\"x\",\"rejected\":\"d\"}\n"
        #expect(throws: GenError.self) { try PreferenceData(jsonLines: text, name: "p.jsonl", tokenizer: chars, context: 8) }
        do { _ = try PreferenceData(jsonLines: text, name: "p.jsonl", tokenizer: chars, context: 8) } catch let e as GenError {
            #expect(e.message.hasPrefix("p.jsonl line 3:"), "\(e.message)")
        }
        for (lines, expected) in [("{\"prompt\":\"a\"}", "p.jsonl line 1: expected a JSON object with strings"),
                                  ("\n{\"prompt\": \"a\", chosen}", "p.jsonl line 2: invalid JSON at column 17: expected a string key"),
                                  ("{\"prompt\": \"é\", chosen}", "p.jsonl line 1: invalid JSON at column 17: expected a string key"),
                                  ("[\"a\", \"b\", \"c\"]", "p.jsonl line 1: expected a JSON object, found an array")] {
            do {
                _ = try PreferenceData(jsonLines: lines, name: "p.jsonl", tokenizer: chars, context: 8)
                Issue.record("\(lines) was read")
            } catch let e as GenError {
                #expect(e.message.hasPrefix(expected), "\(e.message)")
            }
        }
        let data = try PreferenceData(jsonLines: String(text.split(separator: "\n")[0]), name: "p", tokenizer: chars, context: 8)
        #expect(data.pairs.count == 1 && data.length == 2)

        // The batch rows: inputs, targets only on the completion, padding without targets.
        let batch = TokenBatch(B: 2, T: 4)
        PreferenceBatches([short], indices: [0], seed: nil).fill(batch)
        #expect(Array(UnsafeBufferPointer(start: batch.inputs.pointer, count: 8)) == [0, 1, 2, 3, 0, 1, 4, 0])
        #expect(Array(UnsafeBufferPointer(start: batch.targets.pointer, count: 8)) == [-1, 2, 3, -1, -1, 4, -1, -1])
        #expect(batch.ids.pointer[0] == 0 && batch.ids.pointer[1] == 0)
    }
}
