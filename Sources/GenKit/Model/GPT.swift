/// The GPT-2 forward and backward passes over a batch, as plain functions of the parameters
/// and an `Activations` arena.
public enum GPT {
    /// tokens (B,t), targets (B,t) or nil -> activations filled; returns the mean loss over
    /// positions with a target (NaN without targets). Leaves logits (or, with targets,
    /// probabilities) in `acts.logits`.
    @discardableResult
    public static func forward(_ p: ParameterViews, _ config: GPTConfig, _ acts: Activations,
                               tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>?,
                               B: Int, t T: Int) -> Float {
        precondition(B <= acts.B && T <= acts.T && T <= config.blockSize)
        let L = config.nLayer, C = config.nEmbd, V = config.vocabSize, NH = config.nHead
        let M = B * T
        let Mmax = acts.B * acts.T
        let attStride = acts.B * NH * acts.T * acts.T

        Embedding.forward(acts.encoded, tokens: tokens, wte: p.wte, wpe: p.wpe, B: B, T: T, C: C)
        if let mask = acts.embMask { Dropout.apply(acts.encoded, mask: mask, count: M * C) }
        for l in 0..<L {
            let w = p.layer(l)
            let input = l == 0 ? acts.encoded : acts.res3 + (l - 1) * Mmax * C
            let ln1 = acts.ln1 + l * Mmax * C, ln1Mean = acts.ln1Mean + l * Mmax, ln1Rstd = acts.ln1Rstd + l * Mmax
            let qkv = acts.qkv + l * Mmax * 3 * C
            let atty = acts.atty + l * Mmax * C
            let att = acts.att + l * attStride
            let attproj = acts.attproj + l * Mmax * C
            let res2 = acts.res2 + l * Mmax * C
            let ln2 = acts.ln2 + l * Mmax * C, ln2Mean = acts.ln2Mean + l * Mmax, ln2Rstd = acts.ln2Rstd + l * Mmax
            let fch = acts.fch + l * Mmax * 4 * C, fchGelu = acts.fchGelu + l * Mmax * 4 * C
            let fcproj = acts.fcproj + l * Mmax * C
            let res3 = acts.res3 + l * Mmax * C

            LayerNorm.forward(ln1, mean: ln1Mean, rstd: ln1Rstd, input, weight: w.ln1w, bias: w.ln1b, M: M, C: C)
            Matmul.forward(qkv, ln1, w.qkvw, w.qkvb, M: M, K: C, N: 3 * C)
            Attention.forward(atty, att: att, qkv: qkv, mask: acts.attMask.map { $0 + l * attStride }, B: B, T: T, C: C, NH: NH)
            Matmul.forward(attproj, atty, w.attprojw, w.attprojb, M: M, K: C, N: C)
            if let mask = acts.attprojMask { Dropout.apply(attproj, mask: mask + l * Mmax * C, count: M * C) }
            Residual.forward(res2, input, attproj, count: M * C)
            LayerNorm.forward(ln2, mean: ln2Mean, rstd: ln2Rstd, res2, weight: w.ln2w, bias: w.ln2b, M: M, C: C)
            Matmul.forward(fch, ln2, w.fcw, w.fcb, M: M, K: C, N: 4 * C)
            GELU.forward(fchGelu, fch, count: M * 4 * C)
            Matmul.forward(fcproj, fchGelu, w.fcprojw, w.fcprojb, M: M, K: 4 * C, N: C)
            if let mask = acts.fcprojMask { Dropout.apply(fcproj, mask: mask + l * Mmax * C, count: M * C) }
            Residual.forward(res3, res2, fcproj, count: M * C)
        }
        let last = acts.res3 + (L - 1) * Mmax * C
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
        let Mmax = acts.B * acts.T
        let attStride = acts.B * NH * acts.T * acts.T

        CrossEntropy.backward(probabilities: acts.logits, targets: targets, scale: lossScale, M: M, V: V)
        Matmul.backwardTransposed(dinp: acts.dlnf, dweight: g.wte, dout: acts.logits, inp: acts.lnf,
                                  weight: p.wte, M: M, K: C, N: V)
        let dres = acts.dres!
        dres.update(repeating: 0, count: M * C)
        let last = acts.res3 + (L - 1) * Mmax * C
        LayerNorm.backward(dinp: dres, dweight: g.lnfw, dbias: g.lnfb, dout: acts.dlnf, inp: last,
                           weight: p.lnfw, mean: acts.lnfMean, rstd: acts.lnfRstd, M: M, C: C)
        for l in stride(from: L - 1, through: 0, by: -1) {
            let w = p.layer(l), dw = g.layer(l)
            let input = l == 0 ? acts.encoded : acts.res3 + (l - 1) * Mmax * C
            let ln1 = acts.ln1 + l * Mmax * C, ln1Mean = acts.ln1Mean + l * Mmax, ln1Rstd = acts.ln1Rstd + l * Mmax
            let qkv = acts.qkv + l * Mmax * 3 * C
            let atty = acts.atty + l * Mmax * C
            let att = acts.att + l * attStride
            let res2 = acts.res2 + l * Mmax * C
            let ln2 = acts.ln2 + l * Mmax * C, ln2Mean = acts.ln2Mean + l * Mmax, ln2Rstd = acts.ln2Rstd + l * Mmax
            let fch = acts.fch + l * Mmax * 4 * C, fchGelu = acts.fchGelu + l * Mmax * 4 * C

            // MLP branch: dres holds dL/d(res3).
            var dbranch = UnsafePointer(dres)
            if let mask = acts.fcprojMask {
                acts.datty.update(from: dres, count: M * C)
                Dropout.apply(acts.datty, mask: mask + l * Mmax * C, count: M * C)
                dbranch = UnsafePointer(acts.datty)
            }
            Matmul.backward(dinp: acts.dfch, dweight: dw.fcprojw, dbias: dw.fcprojb, dout: dbranch,
                            inp: fchGelu, weight: w.fcprojw, M: M, K: 4 * C, N: C)
            GELU.backward(dinp: acts.dfch, dout: acts.dfch, inp: fch, count: M * 4 * C)
            Matmul.backward(dinp: acts.dx, dweight: dw.fcw, dbias: dw.fcb, dout: acts.dfch,
                            inp: ln2, weight: w.fcw, M: M, K: C, N: 4 * C)
            LayerNorm.backward(dinp: dres, dweight: dw.ln2w, dbias: dw.ln2b, dout: acts.dx, inp: res2,
                               weight: w.ln2w, mean: ln2Mean, rstd: ln2Rstd, M: M, C: C)
            // Attention branch: dres holds dL/d(res2).
            dbranch = UnsafePointer(dres)
            if let mask = acts.attprojMask {
                acts.dx.update(from: dres, count: M * C)
                Dropout.apply(acts.dx, mask: mask + l * Mmax * C, count: M * C)
                dbranch = UnsafePointer(acts.dx)
            }
            Matmul.backward(dinp: acts.datty, dweight: dw.attprojw, dbias: dw.attprojb, dout: dbranch,
                            inp: atty, weight: w.attprojw, M: M, K: C, N: C)
            Attention.backward(dqkv: acts.dqkv, dout: acts.datty, qkv: qkv, att: att,
                               mask: acts.attMask.map { UnsafePointer($0 + l * attStride) },
                               scratch: acts.attScratch, B: B, T: T, C: C, NH: NH)
            Matmul.backward(dinp: acts.dx, dweight: dw.qkvw, dbias: dw.qkvb, dout: acts.dqkv,
                            inp: ln1, weight: w.qkvw, M: M, K: C, N: 3 * C)
            LayerNorm.backward(dinp: dres, dweight: dw.ln1w, dbias: dw.ln1b, dout: acts.dx, inp: input,
                               weight: w.ln1w, mean: ln1Mean, rstd: ln1Rstd, M: M, C: C)
        }
        if let mask = acts.embMask { Dropout.apply(dres, mask: mask, count: M * C) }
        Embedding.backward(dwte: g.wte, dwpe: g.wpe, dout: dres, tokens: tokens, B: B, T: T, C: C, V: V)
    }
}
