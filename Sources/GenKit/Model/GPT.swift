import GenKernels

/// The GPT-2 forward and backward passes over a batch, as plain functions of the parameters
/// and an `Activations` arena: embeddings, `Block` per layer, final LayerNorm, tied head.
public enum GPT {
    /// tokens (B,t), targets (B,t) or nil -> activations filled; returns the mean loss over
    /// positions with a target (a negative target has none; NaN without targets). Leaves logits
    /// (or, with targets, probabilities) in `acts.logits`, unless it holds fewer rows than B·t
    /// (`Activations.logitRows`): then only the losses are kept. With `lastOnly` (B = 1, no targets,
    /// no dropout) only the last position's logits are computed, into `acts.logits[0..<V]`, and
    /// the last block computes only the keys and values of the other positions (for filling a
    /// decoder).
    @discardableResult
    public static func forward(_ p: ParameterViews, _ config: GPTConfig, _ acts: Activations,
                        tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>?,
                        B: Int, t T: Int, lastOnly: Bool = false) -> Float {
        precondition(B <= acts.B && T <= acts.T && T <= config.blockSize)
        precondition(!lastOnly || (B == 1 && targets == nil && acts.dropout == 0 && acts.adapterDropout == 0))
        let L = config.nLayer, C = config.nEmbd, V = config.vocabSize
        let M = B * T

        p.embed(acts.encoded, tokens: tokens, wpe: p.wpe, B: B, T: T, C: C)
        if let d = acts.embedding { Dropout.apply(acts.encoded, acts.encoded, count: M * C, d) }
        for l in 0..<L {
            // With lastOnly the last block runs past attention for the last position alone.
            Block.forward(p.layer(l), acts.layer(l), M: M, config: config,
                          attention: lastOnly && l == L - 1 ? .lastOfSequence : .sequences(B: B, T: T, tiles: acts.attTiles))
        }
        let last = acts.layer(L - 1).res3
        if lastOnly {
            LayerNorm.forward(acts.lnf, mean: acts.lnfMean, rstd: acts.lnfRstd, last + (M - 1) * C,
                              weight: p.lnfw, bias: p.lnfb, M: 1, C: C, eps: config.layerNormEpsilon)
            if let w = p.int8, w.alone {
                Int8Blocks.vectorForwardRounded(acts.logits, acts.lnf, q: w.wte.q, scales: w.wte.scales, K: C, N: V)
            } else {
                Matmul.vectorForwardTransposed(acts.logits, acts.lnf, p.wte, K: C, N: V)
            }
            return .nan
        }
        LayerNorm.forward(acts.lnf, mean: acts.lnfMean, rstd: acts.lnfRstd, last, weight: p.lnfw, bias: p.lnfb, M: M, C: C, eps: config.layerNormEpsilon)
        guard let targets else {
            precondition(M <= acts.logitRows, "activations with \(acts.logitRows) rows of logits compute losses only")
            p.head(acts.logits, acts.lnf, M: M, C: C, V: V)
            return .nan
        }
        // The output layer and the loss a block of `logitRows` rows at a time (one block, all of
        // them, unless the activations hold fewer).
        var r0 = 0
        while r0 < M {
            let n = min(acts.logitRows, M - r0)
            p.head(acts.logits, acts.lnf + r0 * C, M: n, C: C, V: V)
            CrossEntropy.forward(losses: acts.losses + r0, logits: acts.logits, targets: targets + r0, M: n, V: V)
            r0 += n
        }
        var sum: Double = 0
        var n = 0
        for i in 0..<M where targets[i] >= 0 { sum += Double(acts.losses[i]); n += 1 }
        return n > 0 ? Float(sum / Double(n)) : .nan
    }

    /// Backward of the loss `forward` just computed, scaled by `lossScale` (1/N for a mean over
    /// N positions, further divided by the number of micro-batches when accumulating), and per
    /// position by `rowScales` (B·t) when given.
    /// Gradients are added to `g` (nil: the base weights are frozen) and the adapters' to
    /// `lora`; the caller zeroes them once per optimizer step.
    public static func backward(_ p: ParameterViews, _ g: ParameterViews?, lora: LoRAViews? = nil, _ config: GPTConfig, _ acts: Activations,
                         tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>,
                         B: Int, t T: Int, lossScale: Float, rowScales: UnsafePointer<Float>? = nil) {
        let L = config.nLayer, C = config.nEmbd, V = config.vocabSize
        let M = B * T

        CrossEntropy.backward(probabilities: acts.logits, targets: targets, scale: lossScale, rowScales: rowScales, M: M, V: V)
        Matmul.backwardTransposed(dinp: acts.dlnf, dweight: g?.wte, dout: acts.logits, inp: acts.lnf,
                                  weight: p.wte, M: M, K: C, N: V)
        let dres = acts.dres!
        dres.update(repeating: 0, count: M * C)
        LayerNorm.backward(dinp: dres, dweight: g?.lnfw, dbias: g?.lnfb, dout: acts.dlnf, inp: acts.layer(L - 1).res3,
                           weight: p.lnfw, mean: acts.lnfMean, rstd: acts.lnfRstd, M: M, C: C)
        for l in stride(from: L - 1, through: 0, by: -1) {
            Block.backward(p.layer(l), g?.layer(l), lora: lora, layer: l, acts.layer(l), acts, B: B, T: T, config: config)
        }
        guard let g else { return }
        if let d = acts.embedding { Dropout.apply(dres, dres, count: M * C, d) }
        Embedding.backward(dwte: g.wte, dwpe: g.wpe, dout: dres, tokens: tokens, B: B, T: T, C: C, V: V)
    }
}
