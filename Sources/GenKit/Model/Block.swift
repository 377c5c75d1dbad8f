import GenKernels

/// One transformer block's tensors: two LayerNorms and four projections.
public struct BlockWeights {
    let ln1w, ln1b: UnsafeMutablePointer<Float>   // (C)
    let attn: Linear                              // (C,3C): q, k, v
    let proj: Linear                              // (C,C)
    let ln2w, ln2b: UnsafeMutablePointer<Float>   // (C)
    let fc: Linear                                // (C,H), H the MLP width (4C in GPT-2)
    let fcproj: Linear                            // (H,C)
}

/// How a block's attention sees the other positions.
enum AttentionContext {
    /// B sequences of T positions, each attending causally to its own earlier positions, with
    /// `tiles` as the attention's scratch; each row's log-sum-exp is kept in the block's
    /// `attStats` for the backward pass.
    case sequences(B: Int, T: Int, tiles: UnsafeMutablePointer<Float>)
    /// One new position, attending to the `position` keys and values cached before it; its own
    /// key and value are appended to the caches first. Each cache is (NH,capacity,hs): a head's
    /// keys (values) one contiguous run.
    case cached(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>,
                scores: UnsafeMutablePointer<Float>, position: Int, capacity: Int)
    /// One sequence of M positions of which only the last one's output is wanted (filling a
    /// decoder's cache, the model's last block): keys and values for every position, the
    /// rest of the block for the last alone, into row M-1 (`attStats` holds its scores).
    case lastOfSequence
}

/// The transformer block (GPT-2's pre-LayerNorm form), defined once for training, evaluation
/// and the decoder's single-position step:
///   res2 = x + proj(attention(LN1(x))),  res3 = res2 + fcproj(GELU(fc(LN2(res2)))).
enum Block {
    /// a.input (M,C) -> a.res3 (M,C), keeping every intermediate in `a` (M = B*T rows).
    static func forward(_ w: BlockWeights, _ a: Activations.Layer, M: Int, config: GPTConfig, attention: AttentionContext) {
        let C = config.nEmbd, NH = config.nHead, H = config.hidden, eps = config.layerNormEpsilon
        LayerNorm.forward(a.ln1, mean: a.ln1Mean, rstd: a.ln1Rstd, a.input, weight: w.ln1w, bias: w.ln1b, M: M, C: C, eps: eps)
        w.attn.forward(a.qkv, a.ln1, M: M, u: a.uAttn, dropout: a.dropAttn, dropped: a.dropped, partials: a.partials)
        var a = a, M = M
        switch attention {
        case .sequences(let B, let T, let tiles):
            Attention.forward(a.atty, stats: a.attStats, qkv: a.qkv, dropout: a.attention, scratch: tiles, B: B, T: T, C: C, NH: NH)
        case .cached(let keys, let values, let scores, let position, let capacity):
            Attention.cache(a.qkv, keys: keys, values: values, position: position, capacity: capacity, C: C, NH: NH)
            Attention.forwardOne(a.atty, q: a.qkv, kCache: keys, vCache: values, scores: scores, n: position + 1, C: C, NH: NH,
                                 stride: C / NH, headStride: capacity * C / NH)
        case .lastOfSequence:
            let last = M - 1
            Attention.forwardOne(a.atty + last * C, q: a.qkv + last * 3 * C, kCache: a.qkv + C, vCache: a.qkv + 2 * C,
                                 scores: a.attStats, n: M, C: C, NH: NH, stride: 3 * C)
            a = a.row(last, C: C, H: H)
            M = 1
        }
        w.proj.forward(a.attproj, a.atty, M: M, u: a.uAttnProj, dropout: a.dropAttnProj, dropped: a.dropped, partials: a.partials)
        if let d = a.attprojDropout { Dropout.apply(a.attproj, a.attproj, count: M * C, d) }
        Residual.forward(a.res2, a.input, a.attproj, count: M * C)
        LayerNorm.forward(a.ln2, mean: a.ln2Mean, rstd: a.ln2Rstd, a.res2, weight: w.ln2w, bias: w.ln2b, M: M, C: C, eps: eps)
        w.fc.forward(a.fch, a.ln2, M: M, u: a.uFc, dropout: a.dropFc, dropped: a.dropped, partials: a.partials)
        switch config.activation {
        case .geluTanh: GELU.forward(a.fchGelu, a.fch, count: M * H)
        case .gelu: ExactGELU.forward(a.fchGelu, a.fch, count: M * H)
        }
        w.fcproj.forward(a.fcproj, a.fchGelu, M: M, u: a.uMlpProj, dropout: a.dropMlpProj, dropped: a.dropped, partials: a.partials)
        if let d = a.fcprojDropout { Dropout.apply(a.fcproj, a.fcproj, count: M * C, d) }
        Residual.forward(a.res3, a.res2, a.fcproj, count: M * C)
    }

    /// The gradient reaching a residual branch's output: `dres` itself, or, when the branch had
    /// dropout, dres ⊙ its mask written into `scratch`.
    static func branchGradient(_ dres: UnsafeMutablePointer<Float>, dropout: Dropout.Stream?,
                               scratch: UnsafeMutablePointer<Float>, count: Int) -> UnsafePointer<Float> {
        guard let dropout else { return UnsafePointer(dres) }
        Dropout.apply(scratch, dres, count: count, dropout)
        return UnsafePointer(scratch)
    }

    /// Backward of `forward` over B sequences of T positions. On entry `s.dres` (M,C) holds
    /// dL/d(res3); on return it holds dL/d(input). Gradients are added into `g` (nil: the base
    /// weights are frozen) and the adapters' into `lora` (layer `layer`'s).
    static func backward(_ w: BlockWeights, _ g: BlockWeights?, lora: LoRAViews?, layer l: Int, _ a: Activations.Layer,
                         _ s: Activations, B: Int, T: Int, config: GPTConfig) {
        let M = B * T, C = config.nEmbd, NH = config.nHead, H = config.hidden
        let dres = s.dres!
        // MLP branch: dres holds dL/d(res3).
        var dbranch = branchGradient(dres, dropout: a.fcprojDropout, scratch: s.datty, count: M * C)
        w.fcproj.backward(dinp: s.dfch, gradient: g?.fcproj, loraGradient: lora?.weights(layer: l, .mlpProj),
                          dout: dbranch, inp: a.fchGelu, M: M, u: a.uMlpProj, scratch: s.loraScratch,
                          dropout: a.dropMlpProj, dropped: a.dropped)
        switch config.activation {
        case .geluTanh: GELU.backward(dinp: s.dfch, dout: s.dfch, inp: a.fch, count: M * H)
        case .gelu: ExactGELU.backward(dinp: s.dfch, dout: s.dfch, inp: a.fch, count: M * H)
        }
        w.fc.backward(dinp: s.dx, gradient: g?.fc, loraGradient: lora?.weights(layer: l, .fc),
                      dout: s.dfch, inp: a.ln2, M: M, u: a.uFc, scratch: s.loraScratch, dropout: a.dropFc, dropped: a.dropped)
        LayerNorm.backward(dinp: dres, dweight: g?.ln2w, dbias: g?.ln2b, dout: s.dx, inp: a.res2,
                           weight: w.ln2w, mean: a.ln2Mean, rstd: a.ln2Rstd, M: M, C: C)
        // Attention branch: dres holds dL/d(res2).
        dbranch = branchGradient(dres, dropout: a.attprojDropout, scratch: s.dx, count: M * C)
        w.proj.backward(dinp: s.datty, gradient: g?.proj, loraGradient: lora?.weights(layer: l, .attnProj),
                        dout: dbranch, inp: a.atty, M: M, u: a.uAttnProj, scratch: s.loraScratch,
                        dropout: a.dropAttnProj, dropped: a.dropped)
        Attention.backward(dqkv: s.dqkv, dout: s.datty, qkv: a.qkv, stats: a.attStats, dropout: a.attention,
                           scratch: s.attTiles, B: B, T: T, C: C, NH: NH)
        // The first block's input gradient reaches only the embeddings: not needed when they are frozen.
        let needInput = g != nil || l > 0
        w.attn.backward(dinp: needInput ? s.dx : nil, gradient: g?.attn, loraGradient: lora?.weights(layer: l, .attn),
                        dout: s.dqkv, inp: a.ln1, M: M, u: a.uAttn, scratch: s.loraScratch, dropout: a.dropAttn, dropped: a.dropped)
        guard needInput else { return }
        LayerNorm.backward(dinp: dres, dweight: g?.ln1w, dbias: g?.ln1b, dout: s.dx, inp: a.input,
                           weight: w.ln1w, mean: a.ln1Mean, rstd: a.ln1Rstd, M: M, C: C)
    }
}
