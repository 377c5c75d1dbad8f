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

    /// Why this shape cannot be built, or nil when it can.
    public var problem: String? {
        if nLayer < 1 { return "the model needs at least one layer (n_layer = \(nLayer))" }
        if nHead < 1 { return "the model needs at least one head (n_head = \(nHead))" }
        if nEmbd < 1 { return "n_embd must be positive (got \(nEmbd))" }
        if nEmbd % nHead != 0 { return "n_embd (\(nEmbd)) must be a multiple of n_head (\(nHead))" }
        if blockSize < 1 { return "the context must be at least 1 token (got \(blockSize))" }
        if vocabSize < 1 { return "the vocabulary is empty" }
        let count = ParameterLayout(self).count
        if count > Int(Int32.max) { return "the model is too large (\(count) parameters)" }
        return nil
    }

    public var headSize: Int { nEmbd / nHead }
}
