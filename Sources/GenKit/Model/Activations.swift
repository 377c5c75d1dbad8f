import GenKernels
/// Every activation of a forward pass for up to B sequences of up to T tokens (and, when
/// training, the gradient scratch of the backward pass), in one allocation made up front.
/// Per-layer tensors are stored for all layers (or, `oneLayer`, for one, which every layer
/// reuses); a pass over t <= T tokens uses the first B*t rows of each layer's slice.
public final class Activations {
    public let B: Int, T: Int
    let config: GPTConfig
    let buffer: FloatBuffer

    // Forward, shapes for the full B,T (M = B*T rows).
    let encoded: UnsafeMutablePointer<Float>   // (M,C)
    let ln1, ln1Mean, ln1Rstd: UnsafeMutablePointer<Float>   // (L,M,C), (L,M), (L,M)
    let qkv: UnsafeMutablePointer<Float>       // (L,M,3C)
    let atty: UnsafeMutablePointer<Float>      // (L,M,C)
    let attStats: UnsafeMutablePointer<Float>  // (L,B,NH,T): each attention row's log-sum-exp
    let attTiles: UnsafeMutablePointer<Float>  // Attention.scratchCount(T:)
    let attproj, res2: UnsafeMutablePointer<Float>   // (L,M,C)
    let ln2, ln2Mean, ln2Rstd: UnsafeMutablePointer<Float>
    let fch, fchGelu: UnsafeMutablePointer<Float>    // (L,M,H), H the MLP width
    let fcproj, res3: UnsafeMutablePointer<Float>    // (L,M,C)
    let lnf, lnfMean, lnfRstd: UnsafeMutablePointer<Float>   // (M,C), (M), (M)
    public let logits: UnsafeMutablePointer<Float>   // (logitRows,V), logitRows M unless fewer: logits, then probabilities after a loss
    /// Rows of `logits` held: M, or fewer for a pass that keeps only its losses (`GPT.forward`).
    let logitRows: Int
    let losses: UnsafeMutablePointer<Float>    // (M)
    /// Dropout: no mask is stored. Each is a `Dropout.Stream`, drawn where it is applied and
    /// again in the backward pass, from a key set per step (`Trainer`): the embeddings' (index
    /// 0), then per layer 7 keys: attention's weights, the two residual branches, the adapters'
    /// inputs of attn, attn.c_proj, c_fc, mlp.c_proj. `dropout` and `adapterDropout` are the
    /// probabilities (0: none; evaluation and decoding leave them so).
    var dropoutKeys: [UInt64]
    var dropout: Float = 0
    var adapterDropout: Float = 0

    func dropoutStream(_ index: Int, _ p: Float) -> Dropout.Stream? {
        p > 0 ? Dropout.Stream(key: dropoutKeys[index], p: p) : nil
    }
    /// The embeddings' dropout.
    var embedding: Dropout.Stream? { dropoutStream(0, dropout) }
    // Backward scratch, present when training.
    let dres, dx, datty, dlnf: UnsafeMutablePointer<Float>!   // (M,C)
    let dqkv: UnsafeMutablePointer<Float>!     // (M,3C)
    let dfch: UnsafeMutablePointer<Float>!     // (M,H)

    /// Floats of each tensor, in allocation order, computed in floating point so that no
    /// shape, however large, overflows (the caller checks the total before allocating).
    static func sizes(config: GPTConfig, B: Int, T: Int, training: Bool, oneLayer: Bool = false, logitRows: Int? = nil,
                      loraRank: Int = 0, loraDropout: Bool = false) -> [Double] {
        let L = oneLayer ? 1 : Double(config.nLayer), C = Double(config.nEmbd), V = Double(config.vocabSize), NH = Double(config.nHead)
        let H = Double(config.hidden)
        let B = Double(B), T = Double(T)
        let M = B * T
        var sizes: [Double] = [
            M * C, L * M * C, L * M, L * M, L * M * 3 * C, L * M * C, L * B * NH * T,
            Double(Attention.scratchCount(T: Int(T))),
            L * M * C, L * M * C, L * M * C, L * M, L * M, L * M * H, L * M * H,
            L * M * C, L * M * C, M * C, M, M, (logitRows.map { min(M, Double($0)) } ?? M) * V, M,
        ]
        if training { sizes += [M * C, M * C, M * C, M * C, M * 3 * C, M * H] }
        // Adapters: scaling·(x·Aᵀ) of each projection (L,4,M,r), and (M,r) of backward scratch.
        if loraRank > 0 { sizes += [L * 4 * M * Double(loraRank), M * Double(loraRank)] }
        // Adapters' input dropout: the dropped input of one projection at a time (M, max(C,H)).
        if loraRank > 0 && loraDropout { sizes += [M * max(C, H)] }
        // The slabs' partial sums of a single row's projections (`Matmul.vectorForward`).
        sizes += [Double(Matmul.vectorPartials(N: max(3 * Int(C), Int(H))))]
        // Round each tensor up to 16 floats so every one starts 64-byte aligned.
        return sizes.map { ($0 / 16).rounded(.up) * 16 }
    }

    /// Bytes an `Activations` of this shape would hold.
    public static func bytes(config: GPTConfig, B: Int, T: Int, training: Bool, oneLayer: Bool = false, logitRows: Int? = nil,
                             loraRank: Int = 0, loraDropout: Bool = false) -> Double {
        sizes(config: config, B: B, T: T, training: training, oneLayer: oneLayer, logitRows: logitRows, loraRank: loraRank,
              loraDropout: loraDropout).reduce(0, +) * 4
    }

    /// - Parameter oneLayer: one layer's tensors, which every layer reuses (a layer's input is
    ///   the previous one's output, overwritten only once the residual no longer needs it):
    ///   for a forward pass that reads only the logits or losses afterwards (evaluation,
    ///   log-probabilities), not for training or a decoder's prefill, which read every layer's.
    /// - Parameter logitRows: rows of logits held (nil: every position's). With fewer, a
    ///   forward pass with targets computes the output layer and the loss that many rows at a
    ///   time and keeps only the losses (evaluation, log-probabilities; not training).
    /// - Parameter loraRank: the rank of the model's adapters (0: none).
    public init(config: GPTConfig, B: Int, T: Int, training: Bool, oneLayer: Bool = false, logitRows: Int? = nil,
                loraRank: Int = 0, loraDropout: Bool = false) {
        precondition(!(training && oneLayer), "training reads every layer's activations")
        precondition(!training || logitRows == nil, "training reads every position's probabilities")
        precondition((logitRows ?? 1) >= 1)
        self.B = B
        self.T = T
        self.config = config
        self.loraRank = loraRank
        self.oneLayer = oneLayer
        self.logitRows = min(B * T, logitRows ?? B * T)
        let rounded = Self.sizes(config: config, B: B, T: T, training: training, oneLayer: oneLayer, logitRows: logitRows,
                                 loraRank: loraRank, loraDropout: loraDropout).map { Int($0) }
        buffer = FloatBuffer(count: rounded.reduce(0, +), hugePages: training)
        var at = buffer.pointer
        var i = 0
        func next() -> UnsafeMutablePointer<Float> { defer { at += rounded[i]; i += 1 }; return at }
        encoded = next(); ln1 = next(); ln1Mean = next(); ln1Rstd = next(); qkv = next(); atty = next()
        attStats = next(); attTiles = next(); attproj = next(); res2 = next(); ln2 = next(); ln2Mean = next(); ln2Rstd = next()
        fch = next(); fchGelu = next(); fcproj = next(); res3 = next(); lnf = next(); lnfMean = next()
        lnfRstd = next(); logits = next(); losses = next()
        dropoutKeys = Array(repeating: 0, count: 1 + 7 * config.nLayer)
        if training {
            dres = next(); dx = next(); datty = next(); dlnf = next(); dqkv = next(); dfch = next()
        } else {
            dres = nil; dx = nil; datty = nil; dlnf = nil; dqkv = nil; dfch = nil
        }
        if loraRank > 0 { loraU = next(); loraScratch = next() } else { loraU = nil; loraScratch = nil }
        loraDropped = loraRank > 0 && loraDropout ? next() : nil
        partials = next()
    }

    let loraRank: Int
    /// Whether every layer reuses one layer's tensors.
    let oneLayer: Bool

    /// Activations for `model` (with room for its adapters' products).
    public convenience init(model: GPTModel, B: Int, T: Int, training: Bool, oneLayer: Bool = false, logitRows: Int? = nil) {
        self.init(config: model.config, B: B, T: T, training: training, oneLayer: oneLayer, logitRows: logitRows,
                  loraRank: model.loraRank,
                  loraDropout: training && (model.adapters?.config.dropout ?? 0) > 0)
    }
    let loraU: UnsafeMutablePointer<Float>?        // (L,4,M,r)
    let loraDropped: UnsafeMutablePointer<Float>?   // (M, max(C,H))
    let loraScratch: UnsafeMutablePointer<Float>?  // (M,r)
    let partials: UnsafeMutablePointer<Float>      // Matmul.vectorPartials(N: max(3C,H))

    /// Bytes held.
    public var bytes: Int { buffer.count * 4 }

    /// One block's activations: its slices of the per-layer tensors.
    struct Layer {
        let input: UnsafeMutablePointer<Float>                 // (M,C): the block's input (residual)
        let ln1, ln1Mean, ln1Rstd: UnsafeMutablePointer<Float>
        let qkv, atty, attStats, attproj, res2: UnsafeMutablePointer<Float>
        let ln2, ln2Mean, ln2Rstd: UnsafeMutablePointer<Float>
        let fch, fchGelu, fcproj, res3: UnsafeMutablePointer<Float>
        /// Dropout of attention's weights and of the two residual branches.
        let attention, attprojDropout, fcprojDropout: Dropout.Stream?
        /// Adapters' kept products scaling·(x·Aᵀ), (M,r) each; nil without adapters. (Four
        /// fields, not an array: making a layer's views must not allocate.)
        var uAttn, uAttnProj, uFc, uMlpProj: UnsafeMutablePointer<Float>?
        /// Adapters' input dropout, per projection, and room for one dropped input.
        var dropAttn, dropAttnProj, dropFc, dropMlpProj: Dropout.Stream?
        var dropped: UnsafeMutablePointer<Float>?
        /// The adapters' rank (the width of a row of the u's).
        var rank = 0
        /// Scratch of a single row's projections (`Linear.forward` with M = 1).
        var partials: UnsafeMutablePointer<Float>?

        /// Row r's views alone (one position), for the part of a block after attention when
        /// only the last position is wanted; without dropout (inference only). H: the MLP width.
        func row(_ r: Int, C: Int, H: Int) -> Layer {
            var v = Layer(input: input + r * C, ln1: ln1 + r * C, ln1Mean: ln1Mean + r, ln1Rstd: ln1Rstd + r,
                          qkv: qkv + r * 3 * C, atty: atty + r * C, attStats: attStats, attproj: attproj + r * C,
                          res2: res2 + r * C, ln2: ln2 + r * C, ln2Mean: ln2Mean + r, ln2Rstd: ln2Rstd + r,
                          fch: fch + r * H, fchGelu: fchGelu + r * H, fcproj: fcproj + r * C, res3: res3 + r * C,
                          attention: nil, attprojDropout: nil, fcprojDropout: nil)
            v.rank = rank
            v.partials = partials
            v.uAttn = uAttn.map { $0 + r * rank }; v.uAttnProj = uAttnProj.map { $0 + r * rank }
            v.uFc = uFc.map { $0 + r * rank }; v.uMlpProj = uMlpProj.map { $0 + r * rank }
            return v
        }
    }

    func layer(_ index: Int) -> Layer {
        let C = config.nEmbd, Mmax = B * T
        // Dropout keys are per layer index; the tensors' slice is layer 0's when one is kept.
        let l = oneLayer ? 0 : index, keys = index
        var layer = Layer(input: index == 0 ? encoded : res3 + max(0, l - 1) * Mmax * C,
                     ln1: ln1 + l * Mmax * C, ln1Mean: ln1Mean + l * Mmax, ln1Rstd: ln1Rstd + l * Mmax,
                     qkv: qkv + l * Mmax * 3 * C, atty: atty + l * Mmax * C, attStats: attStats + l * B * config.nHead * T,
                     attproj: attproj + l * Mmax * C, res2: res2 + l * Mmax * C,
                     ln2: ln2 + l * Mmax * C, ln2Mean: ln2Mean + l * Mmax, ln2Rstd: ln2Rstd + l * Mmax,
                     fch: fch + l * Mmax * config.hidden, fchGelu: fchGelu + l * Mmax * config.hidden,
                     fcproj: fcproj + l * Mmax * C, res3: res3 + l * Mmax * C,
                     attention: dropoutStream(1 + 7 * keys, dropout), attprojDropout: dropoutStream(2 + 7 * keys, dropout),
                     fcprojDropout: dropoutStream(3 + 7 * keys, dropout))
        layer.partials = partials
        if let loraU {
            let r = loraRank
            let base = loraU + l * 4 * Mmax * r
            layer.rank = r
            layer.uAttn = base; layer.uAttnProj = base + Mmax * r
            layer.uFc = base + 2 * Mmax * r; layer.uMlpProj = base + 3 * Mmax * r
        }
        if let loraDropped {
            layer.dropAttn = dropoutStream(4 + 7 * keys, adapterDropout); layer.dropAttnProj = dropoutStream(5 + 7 * keys, adapterDropout)
            layer.dropFc = dropoutStream(6 + 7 * keys, adapterDropout); layer.dropMlpProj = dropoutStream(7 + 7 * keys, adapterDropout)
            layer.dropped = loraDropped
        }
        return layer
    }

    /// Row r of layer l's output of the attention projection's key/value part, for filling a cache.
    func qkvRow(layer l: Int, row r: Int) -> UnsafeMutablePointer<Float> {
        precondition(!oneLayer)
        return qkv + l * B * T * 3 * config.nEmbd + r * 3 * config.nEmbd
    }
}
