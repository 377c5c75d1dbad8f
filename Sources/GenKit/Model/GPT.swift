/// The GPT-2 forward and backward passes over a batch, as plain functions of the parameters
/// and an `Activations` arena.
public enum GPT {
    /// tokens (B,t), targets (B,t) or nil -> activations filled; returns the mean loss over
    /// positions with a target (NaN without targets). Leaves logits (or, with targets,
    /// probabilities) in `acts.logits`. With `lastOnly` (B = 1, no targets) only the last
    /// position's logits are computed, into `acts.logits[0..<V]` (for filling a decoder).
    @discardableResult
    public static func forward(_ p: ParameterViews, _ config: GPTConfig, _ acts: Activations,
                               tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>?,
                               B: Int, t T: Int, lastOnly: Bool = false) -> Float {
        precondition(B <= acts.B && T <= acts.T && T <= config.blockSize)
        precondition(!lastOnly || (B == 1 && targets == nil))
        let L = config.nLayer, C = config.nEmbd, V = config.vocabSize, NH = config.nHead
        let M = B * T

        Embedding.forward(acts.encoded, tokens: tokens, wte: p.wte, wpe: p.wpe, B: B, T: T, C: C)
        if let mask = acts.embMask { Dropout.apply(acts.encoded, mask: mask, count: M * C) }
        for l in 0..<L {
            let w = p.layer(l), a = acts.layer(l)
            LayerNorm.forward(a.ln1, mean: a.ln1Mean, rstd: a.ln1Rstd, a.input, weight: w.ln1w, bias: w.ln1b, M: M, C: C)
            Matmul.forward(a.qkv, a.ln1, w.qkvw, w.qkvb, M: M, K: C, N: 3 * C)
            Attention.forward(a.atty, att: a.att, qkv: a.qkv, mask: a.attMask, B: B, T: T, C: C, NH: NH)
            Matmul.forward(a.attproj, a.atty, w.attprojw, w.attprojb, M: M, K: C, N: C)
            if let mask = a.attprojMask { Dropout.apply(a.attproj, mask: mask, count: M * C) }
            Residual.forward(a.res2, a.input, a.attproj, count: M * C)
            LayerNorm.forward(a.ln2, mean: a.ln2Mean, rstd: a.ln2Rstd, a.res2, weight: w.ln2w, bias: w.ln2b, M: M, C: C)
            Matmul.forward(a.fch, a.ln2, w.fcw, w.fcb, M: M, K: C, N: 4 * C)
            GELU.forward(a.fchGelu, a.fch, count: M * 4 * C)
            Matmul.forward(a.fcproj, a.fchGelu, w.fcprojw, w.fcprojb, M: M, K: 4 * C, N: C)
            if let mask = a.fcprojMask { Dropout.apply(a.fcproj, mask: mask, count: M * C) }
            Residual.forward(a.res3, a.res2, a.fcproj, count: M * C)
        }
        let last = acts.layer(L - 1).res3
        if lastOnly {
            LayerNorm.forward(acts.lnf, mean: acts.lnfMean, rstd: acts.lnfRstd, last + (M - 1) * C,
                              weight: p.lnfw, bias: p.lnfb, M: 1, C: C)
            Matmul.vectorForwardTransposed(acts.logits, acts.lnf, p.wte, K: C, N: V)
            return .nan
        }
        LayerNorm.forward(acts.lnf, mean: acts.lnfMean, rstd: acts.lnfRstd, last, weight: p.lnfw, bias: p.lnfb, M: M, C: C)
        Matmul.forwardTransposed(acts.logits, acts.lnf, p.wte, M: M, K: C, N: V)
        guard let targets else { return .nan }
        CrossEntropy.forward(losses: acts.losses, logits: acts.logits, targets: targets, M: M, V: V)
        var sum: Double = 0
        var n = 0
        for i in 0..<M where targets[i] >= 0 { sum += Double(acts.losses[i]); n += 1 }
        return n > 0 ? Float(sum / Double(n)) : .nan
    }

    /// Backward of the loss `forward` just computed, scaled by `lossScale` (1/N for a mean over
    /// N positions, further divided by the number of micro-batches when accumulating).
    /// Gradients are added to `g`; the caller zeroes them once per optimizer step.
    public static func backward(_ p: ParameterViews, _ g: ParameterViews, _ config: GPTConfig, _ acts: Activations,
                                tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>,
                                B: Int, t T: Int, lossScale: Float) {
        let L = config.nLayer, C = config.nEmbd, V = config.vocabSize, NH = config.nHead
        let M = B * T

        CrossEntropy.backward(probabilities: acts.logits, targets: targets, scale: lossScale, M: M, V: V)
        Matmul.backwardTransposed(dinp: acts.dlnf, dweight: g.wte, dout: acts.logits, inp: acts.lnf,
                                  weight: p.wte, M: M, K: C, N: V)
        let dres = acts.dres!
        dres.update(repeating: 0, count: M * C)
        let last = acts.layer(L - 1).res3
        LayerNorm.backward(dinp: dres, dweight: g.lnfw, dbias: g.lnfb, dout: acts.dlnf, inp: last,
                           weight: p.lnfw, mean: acts.lnfMean, rstd: acts.lnfRstd, M: M, C: C)
        for l in stride(from: L - 1, through: 0, by: -1) {
            let w = p.layer(l), dw = g.layer(l), a = acts.layer(l)

            // MLP branch: dres holds dL/d(res3).
            var dbranch = UnsafePointer(dres)
            if let mask = a.fcprojMask {
                acts.datty.update(from: dres, count: M * C)
                Dropout.apply(acts.datty, mask: mask, count: M * C)
                dbranch = UnsafePointer(acts.datty)
            }
            Matmul.backward(dinp: acts.dfch, dweight: dw.fcprojw, dbias: dw.fcprojb, dout: dbranch,
                            inp: a.fchGelu, weight: w.fcprojw, M: M, K: 4 * C, N: C)
            GELU.backward(dinp: acts.dfch, dout: acts.dfch, inp: a.fch, count: M * 4 * C)
            Matmul.backward(dinp: acts.dx, dweight: dw.fcw, dbias: dw.fcb, dout: acts.dfch,
                            inp: a.ln2, weight: w.fcw, M: M, K: C, N: 4 * C)
            LayerNorm.backward(dinp: dres, dweight: dw.ln2w, dbias: dw.ln2b, dout: acts.dx, inp: a.res2,
                               weight: w.ln2w, mean: a.ln2Mean, rstd: a.ln2Rstd, M: M, C: C)
            // Attention branch: dres holds dL/d(res2).
            dbranch = UnsafePointer(dres)
            if let mask = a.attprojMask {
                acts.dx.update(from: dres, count: M * C)
                Dropout.apply(acts.dx, mask: mask, count: M * C)
                dbranch = UnsafePointer(acts.dx)
            }
            Matmul.backward(dinp: acts.datty, dweight: dw.attprojw, dbias: dw.attprojb, dout: dbranch,
                            inp: a.atty, weight: w.attprojw, M: M, K: C, N: C)
            Attention.backward(dqkv: acts.dqkv, dout: acts.datty, qkv: a.qkv, att: a.att, mask: a.attMask,
                               scratch: acts.attScratch, B: B, T: T, C: C, NH: NH)
            Matmul.backward(dinp: acts.dx, dweight: dw.qkvw, dbias: dw.qkvb, dout: acts.dqkv,
                            inp: a.ln1, weight: w.qkvw, M: M, K: C, N: 3 * C)
            LayerNorm.backward(dinp: dres, dweight: dw.ln1w, dbias: dw.ln1b, dout: acts.dx, inp: a.input,
                               weight: w.ln1w, mean: a.ln1Mean, rstd: a.ln1Rstd, M: M, C: C)
        }
        if let mask = acts.embMask { Dropout.apply(dres, mask: mask, count: M * C) }
        Embedding.backward(dwte: g.wte, dwpe: g.wpe, dout: dres, tokens: tokens, B: B, T: T, C: C, V: V)
    }
}
