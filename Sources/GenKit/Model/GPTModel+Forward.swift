import GenKernels

extension GPTModel {
    /// The logits (t,V) of every position of one sequence of t <= context tokens, row-major.
    /// Allocates its activations: for tools and tests, not for loops (see `Evaluator`,
    /// `Generator`, `Trainer`).
    public func logits(_ tokens: [Int32]) -> [Float] {
        let t = tokens.count
        precondition(t >= 1 && t <= config.blockSize)
        precondition(tokens.allSatisfy { $0 >= 0 && Int($0) < config.vocabSize })
        let acts = Activations(model: self, B: 1, T: t, training: false, oneLayer: true)
        _ = tokens.withUnsafeBufferPointer { GPT.forward(views, config, acts, tokens: $0.baseAddress!, targets: nil, B: 1, t: t) }
        return Array(UnsafeBufferPointer(start: acts.logits, count: t * config.vocabSize))
    }

    /// The mean next-token cross-entropy of one sequence: `targets[i]` follows `tokens[...i]`.
    public func loss(_ tokens: [Int32], targets: [Int32]) -> Float {
        let t = tokens.count
        precondition(t >= 1 && t <= config.blockSize && targets.count == t)
        let acts = Activations(model: self, B: 1, T: t, training: false, oneLayer: true)
        return tokens.withUnsafeBufferPointer { x in
            targets.withUnsafeBufferPointer { y in
                GPT.forward(views, config, acts, tokens: x.baseAddress!, targets: y.baseAddress!, B: 1, t: t)
            }
        }
    }
}
