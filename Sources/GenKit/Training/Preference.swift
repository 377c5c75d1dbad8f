import GenKernels
import FoundationEssentials
import Glibc

/// One preference as token ids: a prompt and two completions of it, the first preferred.
public struct PreferencePair: Sendable, Equatable {
    public var prompt: [Int32]
    public var chosen: [Int32]
    public var rejected: [Int32]

    public init(prompt: [Int32], chosen: [Int32], rejected: [Int32]) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
    }

    /// Inputs of the longer sequence (prompt + completion, less the last token).
    var length: Int { prompt.count + max(chosen.count, rejected.count) - 1 }
}

/// Preference pairs from JSON lines `{"prompt", "chosen", "rejected"}` (TRL's preference
/// format: completions without the prompt), tokenized for a model of context T.
///
/// As TRL does, each completion ends with `<|endoftext|>` when the tokenizer has it, and an
/// empty prompt is `<|endoftext|>` (else the completion's first token only gives context).
/// A pair longer than T + 1 tokens is truncated as TRL truncates: the prompt loses tokens
/// from its start (keeping at least one), then the completions from their end.
public struct PreferenceData: Sendable {
    public var pairs: [PreferencePair]
    /// Pairs that were truncated to fit the context.
    public var truncated = 0

    /// The longest sequence's inputs (at most the context).
    public var length: Int { pairs.map(\.length).max() ?? 0 }

    public init(pairs: [PreferencePair]) { self.pairs = pairs }

    /// - Throws: `GenError` naming the line of a line that is not such an object, or that holds
    ///   characters the tokenizer does not know; or when there are no pairs.
    public init(jsonLines text: String, name: String, tokenizer: Tokenizer, context T: Int) throws {
        pairs = []
        var number = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            guard !line.allSatisfy(\.isWhitespace) else { continue }
            let obj = try JSON.object(line.utf8, name: "\(name) line \(number)")
            guard let prompt = obj["prompt"]?.string, let chosen = obj["chosen"]?.string,
                  let rejected = obj["rejected"]?.string else {
                throw GenError("\(name) line \(number): expected a JSON object with strings \"prompt\", \"chosen\" and \"rejected\"")
            }
            do {
                let (pair, cut) = try Self.tokenize(prompt: prompt, chosen: chosen, rejected: rejected, tokenizer: tokenizer, context: T)
                if cut { truncated += 1 }
                if pair.chosen.isEmpty && pair.rejected.isEmpty {
                    throw GenError("both completions are empty")
                }
                pairs.append(pair)
            } catch let e as GenError {
                throw GenError("\(name) line \(number): \(e.message)")
            }
        }
        guard !pairs.isEmpty else { throw GenError("\(name) holds no preference pairs") }
    }

    /// One pair's tokens, and whether it had to be truncated.
    public static func tokenize(prompt: String, chosen: String, rejected: String, tokenizer: Tokenizer,
                                context T: Int) throws -> (PreferencePair, Bool) {
        var p = try tokenizer.encode(prompt)
        var c = try tokenizer.encode(chosen)
        var r = try tokenizer.encode(rejected)
        if let eot = tokenizer.endOfText {
            if p.isEmpty { p = [eot] }
            c.append(eot)
            r.append(eot)
        }
        let limit = T + 1
        let longest = max(c.count, r.count)
        guard p.count + longest > limit else { return (PreferencePair(prompt: p, chosen: c, rejected: r), false) }
        let keep = min(p.count, max(1, limit - longest))
        p.removeFirst(p.count - keep)
        let room = limit - p.count
        if c.count > room { c.removeLast(c.count - room) }
        if r.count > room { r.removeLast(r.count - room) }
        return (PreferencePair(prompt: p, chosen: c, rejected: r), true)
    }
}

/// Batches of preference pairs for `DirectPreferenceLoss`: row 2i holds pair k's prompt and
/// chosen completion, row 2i+1 its prompt and rejected one; `batch.ids` holds k for both.
/// Targets are the completion's tokens only (the prompt's positions and the padding have none).
/// Pairs are drawn at random (with replacement, like training windows), or in order from the
/// first, wrapping around (validation).
public final class PreferenceBatches: BatchSource {
    let pairs: [PreferencePair]
    /// The pairs this source draws from (indices into `pairs`).
    public let indices: [Int]
    var random: Random?
    var next = 0

    public init(_ pairs: [PreferencePair], indices: [Int], seed: UInt64?) {
        precondition(!indices.isEmpty)
        self.pairs = pairs
        self.indices = indices
        random = seed.map { Random(seed: $0) }
    }

    public func fill(_ batch: TokenBatch) {
        precondition(batch.B % 2 == 0, "a batch of pairs has an even number of rows")
        for i in 0..<batch.B / 2 {
            let k: Int
            if random != nil { k = indices[random!.nextInt(below: indices.count)] } else { k = indices[next % indices.count]; next += 1 }
            let pair = pairs[k]
            Self.write(pair.prompt, pair.chosen, row: 2 * i, id: k, batch)
            Self.write(pair.prompt, pair.rejected, row: 2 * i + 1, id: k, batch)
        }
    }

    static func write(_ prompt: [Int32], _ completion: [Int32], row b: Int, id: Int, _ batch: TokenBatch) {
        let T = batch.T
        let n = prompt.count + completion.count
        precondition(n - 1 <= T, "a pair of \(n) tokens does not fit a context of \(T)")
        func token(_ i: Int) -> Int32 { i < prompt.count ? prompt[i] : completion[i - prompt.count] }
        for t in 0..<T {
            if t + 1 < n {
                batch.set(row: b, position: t, input: token(t), target: t + 1 >= prompt.count ? token(t + 1) : -1)
            } else {
                batch.set(row: b, position: t, input: t < n ? token(t) : 0, target: -1)
            }
        }
        batch.ids.pointer[b] = Int32(id)
    }

    public var state: [UInt64] {
        get { random?.words ?? [UInt64(next), 0, 0, 0] }
        set { if random != nil { random = Random(state: newValue) } else { next = Int(newValue[0]) } }
    }
}

/// Direct Preference Optimization (Rafailov et al.): per pair
/// loss = −log σ(β·[(log πθ(chosen) − log πref(chosen)) − (log πθ(rejected) − log πref(rejected))]),
/// log-probabilities summed over the completion's tokens, averaged over the pairs of a step.
/// The reference's log-probabilities are computed once, before training (`referenceLogProbs`),
/// so no second model is held. Sums of TRL's metrics are kept for the reporter.
public final class DirectPreferenceLoss: TrainingObjective {
    public let beta: Float
    /// log πref of pair k's chosen completion at 2k, of its rejected one at 2k+1.
    public let reference: [Double]
    /// Per-position weights of the backward pass (B·T).
    let weights: FloatBuffer
    /// Per-row log-probabilities of the last forward pass (B).
    var rowLogProbs: [Double]

    /// Sums over pairs since the last `take`: what TRL logs, as means.
    public struct Metrics: Sendable {
        public var pairs = 0
        public var loss = 0.0, chosenReward = 0.0, rejectedReward = 0.0, correct = 0.0
        public var chosenLogProb = 0.0, rejectedLogProb = 0.0

        /// TRL's names and values (means over the pairs).
        public var values: [(String, Double)] {
            let n = Double(max(pairs, 1))
            return [("rewards/chosen", chosenReward / n), ("rewards/rejected", rejectedReward / n),
                    ("rewards/accuracies", correct / n), ("rewards/margins", (chosenReward - rejectedReward) / n),
                    ("logps/chosen", chosenLogProb / n), ("logps/rejected", rejectedLogProb / n)]
        }
    }
    /// Training batches' metrics since the last `take(validation: false)`, validation's apart.
    var training = Metrics(), validation = Metrics()

    /// - Parameters:
    ///   - reference: from `referenceLogProbs`, two per pair.
    ///   - B, T: the largest batch (rows) this objective will see.
    public init(beta: Float, reference: [Double], B: Int, T: Int) {
        self.beta = beta
        self.reference = reference
        weights = FloatBuffer(count: B * T)
        rowLogProbs = [Double](repeating: 0, count: B)
    }

    /// The metrics summed since the last call, which starts new sums.
    public func take(validation: Bool) -> Metrics {
        if validation { defer { self.validation = Metrics() }; return self.validation }
        defer { training = Metrics() }
        return training
    }

    /// Sums -losses over the positions with a target: the log-probability of each of the
    /// batch's first `rows` rows.
    static func sequenceLogProbs(_ acts: Activations, _ batch: TokenBatch, rows: Int, into out: inout [Double]) {
        let T = batch.T
        for b in 0..<rows {
            var s = 0.0
            for t in 0..<T where batch.targets.pointer[b * T + t] >= 0 { s -= Double(acts.losses[b * T + t]) }
            out[b] = s
        }
    }

    /// The loss of the batch's pairs from `rowLogProbs`; with `weights`, fills them with
    /// d(loss · scale)/d(log p) for every position (negated, as the cross-entropy backward
    /// takes them).
    func pairLosses(_ batch: TokenBatch, into metrics: inout Metrics, scale: Float, weights: UnsafeMutablePointer<Float>?) -> Float {
        let P = batch.B / 2, T = batch.T
        let beta = Double(self.beta)
        var total = 0.0
        for i in 0..<P {
            let k = Int(batch.ids.pointer[2 * i])
            let chosen = beta * (rowLogProbs[2 * i] - reference[2 * k])
            let rejected = beta * (rowLogProbs[2 * i + 1] - reference[2 * k + 1])
            let z = chosen - rejected
            // −log σ(z) = softplus(−z), computed without overflow
            let loss = z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z))
            total += loss
            metrics.pairs += 1
            metrics.loss += loss
            metrics.chosenReward += chosen
            metrics.rejectedReward += rejected
            metrics.correct += chosen > rejected ? 1 : 0
            metrics.chosenLogProb += rowLogProbs[2 * i]
            metrics.rejectedLogProb += rowLogProbs[2 * i + 1]
            guard let weights else { continue }
            // dloss/dz = −σ(−z); d/d(log πθ(chosen)) = β·dloss/dz, rejected the opposite.
            let g = Float(beta / (1 + exp(z))) * scale
            for t in 0..<T {
                weights[2 * i * T + t] = g
                weights[(2 * i + 1) * T + t] = -g
            }
        }
        return Float(total / Double(P))
    }

    public func accumulate(_ model: GPTModel, _ acts: Activations, _ batch: TokenBatch,
                           gradients: GradientViews, microBatches: Int) -> Float {
        let B = batch.B, T = batch.T
        GPT.forward(model.views, model.config, acts, tokens: batch.inputs.pointer, targets: batch.targets.pointer, B: B, t: T)
        Self.sequenceLogProbs(acts, batch, rows: batch.B, into: &rowLogProbs)
        let loss = pairLosses(batch, into: &training, scale: 1 / Float(Double(B / 2) * Double(microBatches)), weights: weights.pointer)
        GPT.backward(model.views, gradients.base, lora: gradients.lora, model.config, acts, tokens: batch.inputs.pointer,
                     targets: batch.targets.pointer, B: B, t: T, lossScale: 1, rowScales: weights.pointer)
        return loss
    }

    public func loss(_ model: GPTModel, _ acts: Activations, _ batch: TokenBatch) -> Float {
        GPT.forward(model.views, model.config, acts, tokens: batch.inputs.pointer, targets: batch.targets.pointer, B: batch.B, t: batch.T)
        Self.sequenceLogProbs(acts, batch, rows: batch.B, into: &rowLogProbs)
        return pairLosses(batch, into: &validation, scale: 0, weights: nil)
    }

    /// log p(chosen | prompt) and log p(rejected | prompt) of every pair under `model` (two per
    /// pair, chosen first): the reference of a run that starts from `model`.
    /// - Throws: `GenError` when the activations would not fit in memory.
    public static func referenceLogProbs(model: GPTModel, pairs: [PreferencePair], context T: Int,
                                         pairsPerBatch P: Int, threads: Int = Parallel.cores) throws -> [Double] {
        try Machine.checkFits(Activations.bytes(config: model.config, B: 2 * P, T: T, training: false, oneLayer: true,
                                                logitRows: Evaluator.logitRows, loraRank: model.loraRank),
                              "computing the reference log-probabilities")
        let batch = TokenBatch(B: 2 * P, T: T)
        let acts = Activations(model: model, B: 2 * P, T: T, training: false, oneLayer: true, logitRows: Evaluator.logitRows)
        var out = [Double](repeating: 0, count: 2 * pairs.count)
        var rows = [Double](repeating: 0, count: 2 * P)
        Parallel.withThreads(threads) {
            var start = 0
            while start < pairs.count {
                let n = min(P, pairs.count - start)
                for i in 0..<n {
                    let pair = pairs[start + i]
                    PreferenceBatches.write(pair.prompt, pair.chosen, row: 2 * i, id: start + i, batch)
                    PreferenceBatches.write(pair.prompt, pair.rejected, row: 2 * i + 1, id: start + i, batch)
                }
                GPT.forward(model.views, model.config, acts, tokens: batch.inputs.pointer, targets: batch.targets.pointer, B: 2 * n, t: T)
                sequenceLogProbs(acts, batch, rows: 2 * n, into: &rows)
                for r in 0..<(2 * n) { out[2 * start + r] = rows[r] }
                start += n
            }
        }
        return out
    }
}
