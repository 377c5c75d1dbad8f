import GenKernels
/// The shape of a GPT-2 model, and the variants of its maths that Hugging Face's GPT-2
/// configurations choose (the MLP's width, LayerNorm's epsilon, the GELU form).
public struct GPTConfig: Codable, Sendable, Equatable {
    public var nLayer: Int
    public var nHead: Int
    public var nEmbd: Int
    /// The context length: the most tokens the model sees at once.
    public var blockSize: Int
    public var vocabSize: Int
    /// The MLP's hidden width (`n_inner`; nil: 4·n_embd).
    public var nInner: Int?
    public var layerNormEpsilon: Float = 1e-5
    public var activation: Activation = .geluTanh

    /// The MLP's nonlinearity.
    public enum Activation: String, Codable, Sendable {
        /// GPT-2's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
        case geluTanh = "gelu_new"
        /// The exact GELU, x·Φ(x) (`gelu`).
        case gelu = "gelu"
    }

    enum CodingKeys: String, CodingKey {
        case nLayer = "n_layer", nHead = "n_head", nEmbd = "n_embd"
        case blockSize = "block_size", vocabSize = "vocab_size"
        case nInner = "n_inner", layerNormEpsilon = "layer_norm_epsilon", activation = "activation_function"
    }

    public init(nLayer: Int, nHead: Int, nEmbd: Int, blockSize: Int, vocabSize: Int) {
        self.nLayer = nLayer
        self.nHead = nHead
        self.nEmbd = nEmbd
        self.blockSize = blockSize
        self.vocabSize = vocabSize
    }

    public init(from decoder: Swift.Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        nLayer = try c.decode(Int.self, forKey: .nLayer)
        nHead = try c.decode(Int.self, forKey: .nHead)
        nEmbd = try c.decode(Int.self, forKey: .nEmbd)
        blockSize = try c.decode(Int.self, forKey: .blockSize)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        nInner = try c.decodeIfPresent(Int.self, forKey: .nInner)
        layerNormEpsilon = try c.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? 1e-5
        activation = try c.decodeIfPresent(Activation.self, forKey: .activation) ?? .geluTanh
    }

    /// Writes the variants only when they differ from GPT-2's defaults (so that the config of
    /// a default model reads as before).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(nLayer, forKey: .nLayer)
        try c.encode(nHead, forKey: .nHead)
        try c.encode(nEmbd, forKey: .nEmbd)
        try c.encode(blockSize, forKey: .blockSize)
        try c.encode(vocabSize, forKey: .vocabSize)
        if let nInner, nInner != 4 * nEmbd { try c.encode(nInner, forKey: .nInner) }
        if layerNormEpsilon != 1e-5 { try c.encode(layerNormEpsilon, forKey: .layerNormEpsilon) }
        if activation != .geluTanh { try c.encode(activation, forKey: .activation) }
    }

    /// The MLP's hidden width.
    public var hidden: Int { nInner ?? 4 * nEmbd }

    /// Floats of the largest of a block's projections (attn's (C,3C) or the MLP's (C,H)).
    var largestProjection: Int { max(3 * nEmbd * nEmbd, nEmbd * hidden) }

    /// The most parameters gen builds (offsets into the parameter buffer stay below 2^31).
    public static let maximumParameters = Int(Int32.max)

    /// Checks that this shape can be built, before anything is allocated: every size is
    /// computed in floating point first, so that no product can overflow.
    /// - Throws: `GenError.usage` naming the setting (layers, heads, embd, context, vocab-size).
    public func validate() throws {
        if nLayer < 1 { throw GenError.usage("the model needs at least one layer (got \(nLayer))", setting: "layers") }
        if nHead < 1 { throw GenError.usage("the model needs at least one head (got \(nHead))", setting: "heads") }
        if nEmbd < 1 { throw GenError.usage("the embedding width must be positive (got \(nEmbd))", setting: "embd") }
        if nEmbd % nHead != 0 {
            throw GenError.usage("the embedding width (\(nEmbd)) must be a multiple of the number of heads (\(nHead))", setting: "embd")
        }
        if blockSize < 1 { throw GenError.usage("the context must be at least 1 token (got \(blockSize))", setting: "context") }
        if vocabSize < 1 { throw GenError.usage("the vocabulary is empty", setting: "vocab-size") }
        if let nInner, nInner < 1 { throw GenError.usage("the MLP width n_inner must be positive (got \(nInner))") }
        if !(layerNormEpsilon > 0 && layerNormEpsilon < 1) { throw GenError.usage("layer_norm_epsilon must be in (0, 1) (got \(layerNormEpsilon))") }
        let count = parameterEstimate
        if count > Double(Self.maximumParameters) {
            throw GenError.usage(cFormat("the model is too large (%.3g parameters; gen builds at most %ld)", count, Self.maximumParameters))
        }
    }

    /// Parameters of a shape, in floating point (exact below 2^53, never overflowing).
    static func parameterEstimate(nLayer: Int, nEmbd: Int, blockSize: Int, vocabSize: Int, hidden: Double) -> Double {
        let L = Double(nLayer), C = Double(nEmbd), H = hidden
        // Per block: qkv 3C²+3C, proj C²+C, fc CH+H, fcproj HC+C, two LayerNorms 4C.
        return (Double(vocabSize) + Double(blockSize)) * C + L * (4 * C * C + 2 * C * H + 9 * C + H) + 2 * C
    }

    /// Parameters of this shape, in floating point.
    var parameterEstimate: Double {
        Self.parameterEstimate(nLayer: nLayer, nEmbd: nEmbd, blockSize: blockSize, vocabSize: vocabSize,
                               hidden: nInner.map(Double.init) ?? 4 * Double(nEmbd))
    }

    /// True when `validate` passes.
    public var isValid: Bool { (try? validate()) != nil }
}
