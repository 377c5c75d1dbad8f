import GenKernels
/// Inference with a KV cache: one new token costs one pass over the cached keys and values
/// of each layer, not a re-run of the prefix. Holds no gradients or optimizer state.
public final class Decoder {
    public let model: GPTModel
    let config: GPTConfig
    let buffer: FloatBuffer
    let kCache, vCache: UnsafeMutablePointer<Float>   // (L,NH,T,hs) each
    let x, x2, xn, qkv, y, proj, fch: UnsafeMutablePointer<Float>   // (C), (C), (C), (3C), (C), (C), (H)
    let scores: UnsafeMutablePointer<Float>            // (NH,T)
    let mean, rstd: UnsafeMutablePointer<Float>        // (1) each
    /// Logits of the last token fed, (V).
    public let logits: UnsafeMutablePointer<Float>
    /// Batched forward for a prompt or a re-filled window, B = 1.
    let prefill: Activations
    /// Tokens now in the cache.
    public private(set) var length = 0

    public init(model: GPTModel) {
        self.model = model
        config = model.config
        let L = config.nLayer, T = config.blockSize, C = config.nEmbd, NH = config.nHead, V = config.vocabSize
        let sizes = [L * T * C, L * T * C, C, C, C, 3 * C, C, C, config.hidden, NH * T, 16, 16, V,
                     Matmul.vectorPartials(N: max(3 * C, config.hidden))].map { ($0 + 15) / 16 * 16 }
        buffer = FloatBuffer(count: sizes.reduce(0, +))
        var at = buffer.pointer
        var i = 0
        func next() -> UnsafeMutablePointer<Float> { defer { at += sizes[i]; i += 1 }; return at }
        kCache = next(); vCache = next(); x = next(); x2 = next(); xn = next(); qkv = next(); y = next(); proj = next()
        fch = next(); scores = next(); mean = next(); rstd = next(); logits = next()
        let partials = next()
        prefill = Activations(model: model, B: 1, T: T, training: false)
        loraU = FloatBuffer(count: 4 * max(1, model.loraRank))
        tokenBuffer = TokenBuffer(count: T)
        // The single-position step's activations: the residual stream in x (and x2 between the
        // two branches), scratch reused across the block, GELU in place.
        step = Activations.Layer(input: x, ln1: xn, ln1Mean: mean, ln1Rstd: rstd, qkv: qkv, atty: y, attStats: scores,
                                 attproj: proj, res2: x2, ln2: xn, ln2Mean: mean, ln2Rstd: rstd,
                                 fch: fch, fchGelu: fch, fcproj: proj, res3: x,
                                 attention: nil, attprojDropout: nil, fcprojDropout: nil)
        step.partials = partials
        if model.adapters != nil {
            let r = model.loraRank, u = loraU.pointer
            step.uAttn = u; step.uAttnProj = u + r; step.uFc = u + 2 * r; step.uMlpProj = u + 3 * r
        }
    }
    /// What `feed` makes of the output layer (`keep`).
    public private(set) var kept = LogitsRead.all
    /// After a `feed` that kept `.bounded` logits, each one's bound (V): the exact logit i lies
    /// within logits[i] ± bounds[i], and `exactLogit(i)` gives it. nil when the logits are exact.
    public private(set) var bounds: UnsafePointer<Float>?
    /// The output layer's 8-bit copy and `TopRows`'s scratch, made on first use.
    var screen: (bytes: ByteBuffer, scales: FloatBuffer, absSums: FloatBuffer, scratch: FloatBuffer)?

    /// Asks `feed` for only what a sampler reads: the k largest logits exact and the rest −∞
    /// (greedy: 1; top-k alone: k), or every logit within a bound (plain sampling), from an
    /// 8-bit copy of the output layer (`TopRows`). Kept to all logits where it would not pay:
    /// a model decoding from 8-bit weights (its output layer is already read in 8 bits), an
    /// output layer under a million weights, or k over a sixteenth of the vocabulary. The first
    /// `feed` that needs the 8-bit copy makes it (a pass over the embeddings, on the pool); it
    /// is of the weights at that moment, so a model whose embeddings change later (trained
    /// further) needs a new decoder.
    public func keep(_ read: LogitsRead) {
        let C = config.nEmbd, V = config.vocabSize
        kept = .all
        guard V * C >= 1 << 20 && model.views.int8 == nil else { return }
        switch read {
        case .largest(let k) where k > 0 && k * 16 <= V: kept = read
        case .bounded: kept = read
        default: break
        }
    }

    /// The exact logit i of the last token fed (the bits of every-logit decoding).
    public func exactLogit(_ i: Int) -> Float {
        Matmul.dot(row: model.views.wte + i * config.nEmbd, xn, K: config.nEmbd)
    }

    /// The output layer's 8-bit copy for `TopRows`.
    func makeScreen() -> (bytes: ByteBuffer, scales: FloatBuffer, absSums: FloatBuffer, scratch: FloatBuffer) {
        if let screen { return screen }
        let C = config.nEmbd, V = config.vocabSize
        let bytes = ByteBuffer(count: V * Int8Blocks.rowBytes(K: C))
        let scales = FloatBuffer(count: V * Int8Blocks.blocks(K: C))
        let absSums = FloatBuffer(count: V * Int8Blocks.blocks(K: C))
        Int8Blocks.quantize(rowsOf: model.views.wte, K: C, N: V, q: bytes.pointer, scales: scales.pointer,
                            roundingWeights: false, absSums: absSums.pointer)
        screen = (bytes, scales, absSums, FloatBuffer(count: TopRows.scratchCount(K: C, N: V, k: V / 16)))
        return screen!
    }

    /// Bytes `keepExact` adds for a model of this shape.
    public static func screenBytes(_ c: GPTConfig) -> Double {
        Double(c.vocabSize) * Double(Int8Blocks.rowBytes(K: c.nEmbd) + 8 * Int8Blocks.blocks(K: c.nEmbd) + 4) + 4 * Double(c.vocabSize / 16)
    }

    /// The adapters' products for the single-position step, (r) each.
    let loraU: FloatBuffer
    let tokenBuffer: TokenBuffer
    var step: Activations.Layer

    /// Empties the cache.
    public func reset() { length = 0 }

    /// Fills the cache from `tokens` (at most the context) with one batched forward pass,
    /// replacing what it held; `logits` then predicts the token after the last one. A whole
    /// context's keys and values are not copied into the cache: it could take no further token,
    /// so the next one re-fills it (`advance`).
    public func fill(_ tokens: UnsafeBufferPointer<Int32>) {
        let n = tokens.count
        precondition(n >= 1 && n <= config.blockSize)
        let C = config.nEmbd, V = config.vocabSize
        tokenBuffer.pointer.update(from: tokens.baseAddress!, count: n)
        GPT.forward(model.views, config, prefill, tokens: tokenBuffer.pointer, targets: nil, B: 1, t: n, lastOnly: true)
        let T = config.blockSize
        if n < T {   // a full window's keys and values would never be read
            for l in 0..<config.nLayer {
                for r in 0..<n {
                    Attention.cache(prefill.qkvRow(layer: l, row: r), keys: kCache + l * T * C, values: vCache + l * T * C,
                                    position: r, capacity: T, C: C, NH: config.nHead)
                }
            }
        }
        logits.update(from: prefill.logits, count: V)
        bounds = nil
        length = n
    }

    /// Feeds one token at the next position; `logits` then predicts the token after it (only
    /// or what `keep` asked for). The cache must not be full
    /// (`length < blockSize`).
    public func feed(_ token: Int32) {
        precondition(length < config.blockSize)
        let p = model.views
        let L = config.nLayer, T = config.blockSize, C = config.nEmbd, V = config.vocabSize
        let pos = length
        bounds = nil
        tokenBuffer.pointer[0] = token
        p.embed(x, tokens: tokenBuffer.pointer, wpe: p.wpe + pos * C, B: 1, T: 1, C: C)
        for l in 0..<L {
            Block.forward(p.layer(l), step, M: 1, config: config,
                          attention: .cached(keys: kCache + l * T * C, values: vCache + l * T * C, scores: scores, position: pos, capacity: T))
        }
        LayerNorm.forward(xn, mean: mean, rstd: rstd, x, weight: p.lnfw, bias: p.lnfb, M: 1, C: C, eps: config.layerNormEpsilon)
        if let wte = p.int8?.wte {
            Int8Blocks.vectorForward(logits, xn, q: wte.q, scales: wte.scales, bias: nil, K: C, N: V)
        } else if case .largest(let k) = kept {
            let screen = makeScreen()
            TopRows.forward(logits, xn, weight: p.wte, q: screen.bytes.pointer, scales: screen.scales.pointer,
                            absSums: screen.absSums.pointer, K: C, N: V, k: k, scratch: screen.scratch.pointer)
        } else if kept == .bounded {
            let screen = makeScreen(), bound = screen.scratch.pointer
            TopRows.approximate(logits, bound: bound, xn, q: screen.bytes.pointer, scales: screen.scales.pointer,
                                absSums: screen.absSums.pointer, K: C, N: V, scratch: bound + V)
            bounds = UnsafePointer(bound)
        } else {
            Matmul.vectorForwardTransposed(logits, xn, p.wte, K: C, N: V)
        }
        length += 1
    }

    /// Appends `token` to a running sequence whose last `window` tokens are `history` (the
    /// token included), keeping nanoGPT's crop: once the sequence is longer than the context,
    /// each prediction sees exactly the last `blockSize` tokens at positions 0..<blockSize,
    /// so the cache is rebuilt for the shifted window.
    public func advance(token: Int32, history: UnsafeBufferPointer<Int32>) {
        if length < config.blockSize {
            feed(token)
        } else {
            let n = min(history.count, config.blockSize)
            fill(UnsafeBufferPointer(rebasing: history[(history.count - n)...]))
        }
    }
}
