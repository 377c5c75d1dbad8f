import GenKernels
/// The shape of a GPT-2 model.
public struct GPTConfig: Codable, Sendable, Equatable {
    public var nLayer: Int
    public var nHead: Int
    public var nEmbd: Int
    /// The context length: the most tokens the model sees at once.
    public var blockSize: Int
    public var vocabSize: Int

    enum CodingKeys: String, CodingKey {
        case nLayer = "n_layer", nHead = "n_head", nEmbd = "n_embd"
        case blockSize = "block_size", vocabSize = "vocab_size"
    }

    public init(nLayer: Int, nHead: Int, nEmbd: Int, blockSize: Int, vocabSize: Int) {
        self.nLayer = nLayer
        self.nHead = nHead
        self.nEmbd = nEmbd
        self.blockSize = blockSize
        self.vocabSize = vocabSize
    }

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
        let count = Self.parameterEstimate(nLayer: nLayer, nEmbd: nEmbd, blockSize: blockSize, vocabSize: vocabSize)
        if count > Double(Self.maximumParameters) {
            throw GenError.usage(String(format: "the model is too large (%.3g parameters; gen builds at most %d)", count, Self.maximumParameters))
        }
    }

    /// Parameters of a shape, in floating point (exact below 2^53, never overflowing).
    static func parameterEstimate(nLayer: Int, nEmbd: Int, blockSize: Int, vocabSize: Int) -> Double {
        let L = Double(nLayer), C = Double(nEmbd)
        return (Double(vocabSize) + Double(blockSize)) * C + L * (12 * C * C + 13 * C) + 2 * C
    }

    /// True when `validate` passes.
    public var isValid: Bool { (try? validate()) != nil }
}
