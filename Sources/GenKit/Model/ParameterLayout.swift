import GenKernels
/// Where each parameter tensor lives in the one flat parameter buffer, under GPT-2's names.
///
/// Tensors of one kind are stored for all layers together (as llm.c does), so a layer's
/// tensor is a contiguous slice; weights are `[in, out]` as in GPT-2's `Conv1D`.
public struct ParameterLayout: Sendable {
    public struct Tensor: Sendable {
        public var name: String
        public var shape: [Int]
        public var offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Weight decay applies to matrices, not to biases or LayerNorm parameters (as nanoGPT).
        public var decays: Bool { shape.count >= 2 }
        /// The kind of a model tensor (nil for an adapter's).
        var kind: Kind? = nil
        /// Which of a block's four projection weights, (K,N), this is (0 attn, 1 proj, 2 fc,
        /// 3 fcproj, as `Int8Weights.matrix` numbers them), or nil.
        var projection: Int? { kind.flatMap { [.qkvw, .attprojw, .fcw, .fcprojw].firstIndex(of: $0) } }
        var isProjection: Bool { projection != nil }
    }

    /// The kinds of tensor, in buffer order, with their per-layer shapes.
    enum Kind: Int, CaseIterable {
        case wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb
    }

    public let config: GPTConfig
    /// Offsets of each kind's block, indexed by `Kind.rawValue`.
    let kindOffsets: [Int]
    public let count: Int
    /// Every tensor under its GPT-2 name, in buffer order.
    public let tensors: [Tensor]

    static func shape(_ k: Kind, _ c: GPTConfig) -> [Int] {
        let C = c.nEmbd
        switch k {
        case .wte: return [c.vocabSize, C]
        case .wpe: return [c.blockSize, C]
        case .ln1w, .ln1b, .ln2w, .ln2b, .attprojb, .fcprojb, .lnfw, .lnfb: return [C]
        case .qkvw: return [C, 3 * C]
        case .qkvb: return [3 * C]
        case .attprojw: return [C, C]
        case .fcw: return [C, c.hidden]
        case .fcb: return [c.hidden]
        case .fcprojw: return [c.hidden, C]
        }
    }

    static func perLayer(_ k: Kind) -> Bool {
        switch k {
        case .wte, .wpe, .lnfw, .lnfb: return false
        default: return true
        }
    }

    static func name(_ k: Kind, layer: Int) -> String {
        switch k {
        case .wte: return "wte.weight"
        case .wpe: return "wpe.weight"
        case .lnfw: return "ln_f.weight"
        case .lnfb: return "ln_f.bias"
        case .ln1w: return "h.\(layer).ln_1.weight"
        case .ln1b: return "h.\(layer).ln_1.bias"
        case .qkvw: return "h.\(layer).attn.c_attn.weight"
        case .qkvb: return "h.\(layer).attn.c_attn.bias"
        case .attprojw: return "h.\(layer).attn.c_proj.weight"
        case .attprojb: return "h.\(layer).attn.c_proj.bias"
        case .ln2w: return "h.\(layer).ln_2.weight"
        case .ln2b: return "h.\(layer).ln_2.bias"
        case .fcw: return "h.\(layer).mlp.c_fc.weight"
        case .fcb: return "h.\(layer).mlp.c_fc.bias"
        case .fcprojw: return "h.\(layer).mlp.c_proj.weight"
        case .fcprojb: return "h.\(layer).mlp.c_proj.bias"
        }
    }

    public init(_ config: GPTConfig) {
        self.config = config
        var offsets: [Int] = []
        // Each tensor with its place in checkpoint order: wte, wpe, each layer's tensors, ln_f
        // (GPT-2's order); the keys are made once, not from the names at every comparison.
        var tensors: [(key: (Int, Int), tensor: Tensor)] = []
        var at = 0
        for k in Kind.allCases {
            offsets.append(at)
            let shape = Self.shape(k, config)
            let n = shape.reduce(1, *)
            let layers = Self.perLayer(k) ? config.nLayer : 1
            for l in 0..<layers {
                let offset = at + l * n
                let key = switch k {
                case .wte: (0, 0)
                case .wpe: (1, 0)
                case .lnfw, .lnfb: (3, offset)
                default: (2, l * (1 << 40) + offset)
                }
                tensors.append((key, Tensor(name: Self.name(k, layer: l), shape: shape, offset: offset, kind: k)))
            }
            at += n * layers
        }
        self.kindOffsets = offsets
        self.count = at
        self.tensors = tensors.sorted { $0.key < $1.key }.map(\.tensor)
    }

    func offset(_ k: Kind) -> Int { kindOffsets[k.rawValue] }

    /// The layer a per-layer tensor belongs to (0 for the others).
    func layer(of t: Tensor) -> Int { t.kind.map { (t.offset - offset($0)) / t.count } ?? 0 }
}

/// Named views into a flat buffer laid out by `ParameterLayout` (parameters, their gradients,
/// or Adam moments). Per-layer pointers point at layer 0; `layer(l)` gives layer l's views.
public struct ParameterViews {
    public let wpe, lnfw, lnfb: UnsafeMutablePointer<Float>
    /// The token embeddings: in the buffer, or where they lie in a mapped model file
    /// (`GPTModel.readEmbeddingsInPlace`).
    public internal(set) var wte: UnsafeMutablePointer<Float>
    let ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb: UnsafeMutablePointer<Float>
    let C: Int, H: Int
    /// Adapters beside the projections, if any.
    public var lora: LoRAViews?
    /// The projections and embeddings in 8 bits, if the model was rounded to them.
    var int8: Int8Weights?
    /// Whether those 8 bits are all there is of the projections and embeddings (no fp32 copy).
    var int8Only: Bool { int8?.alone ?? false }

    /// logits (M,V) = inp (M,C) · wteᵀ, the tied output layer (from 8 bits alone, the rows
    /// rebuilt a block at a time in the projections' buffer).
    func head(_ logits: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, M: Int, C: Int, V: Int) {
        if let int8, let dense = int8.dense {
            let w = int8.wte
            Int8Blocks.forwardTransposedRebuilt(logits, inp, q: w.q, scales: w.scales, M: M, K: C, N: V,
                                                scratch: dense.pointer, capacity: dense.count)
        } else {
            Matmul.forwardTransposed(logits, inp, wte, M: M, K: C, N: V)
        }
    }

    /// out (B,T,C) = the embeddings of `tokens` + the positions' (wpe from the first position's).
    func embed(_ out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>, wpe: UnsafePointer<Float>, B: Int, T: Int, C: Int) {
        if let int8, int8.alone {
            let w = int8.wte
            Int8Blocks.embed(out, tokens: tokens, q: w.q, scales: w.scales, wpe: wpe, B: B, T: T, C: C)
        } else {
            Embedding.forward(out, tokens: tokens, wte: wte, wpe: wpe, B: B, T: T, C: C)
        }
    }
    /// The four projections are stored transposed, (N,K) (`GPTModel.arrangeForDecoding`).
    var rows = false
    /// Where each block's four projection weights are, four a layer, some in a mapped model
    /// file and the others in the buffer (`GPTModel.readProjectionsInPlace`), or empty: all in
    /// the buffer, at the layout's offsets.
    var projectionsInPlace: [UnsafeMutablePointer<Float>] = []

    public init(_ base: UnsafeMutablePointer<Float>, _ layout: ParameterLayout) {
        wte = base + layout.offset(.wte)
        wpe = base + layout.offset(.wpe)
        ln1w = base + layout.offset(.ln1w)
        ln1b = base + layout.offset(.ln1b)
        qkvw = base + layout.offset(.qkvw)
        qkvb = base + layout.offset(.qkvb)
        attprojw = base + layout.offset(.attprojw)
        attprojb = base + layout.offset(.attprojb)
        ln2w = base + layout.offset(.ln2w)
        ln2b = base + layout.offset(.ln2b)
        fcw = base + layout.offset(.fcw)
        fcb = base + layout.offset(.fcb)
        fcprojw = base + layout.offset(.fcprojw)
        fcprojb = base + layout.offset(.fcprojb)
        lnfw = base + layout.offset(.lnfw)
        lnfb = base + layout.offset(.lnfb)
        C = layout.config.nEmbd
        H = layout.config.hidden
    }

    /// One block's tensors (of the parameters, or of their gradients).
    public func layer(_ l: Int) -> BlockWeights {
        let C = self.C, H = self.H
        let mapped = !projectionsInPlace.isEmpty
        let qkvw = mapped ? projectionsInPlace[4 * l] : self.qkvw + l * 3 * C * C
        let attprojw = mapped ? projectionsInPlace[4 * l + 1] : self.attprojw + l * C * C
        let fcw = mapped ? projectionsInPlace[4 * l + 2] : self.fcw + l * C * H
        let fcprojw = mapped ? projectionsInPlace[4 * l + 3] : self.fcprojw + l * H * C
        return BlockWeights(ln1w: ln1w + l * C, ln1b: ln1b + l * C,
                            attn: Linear(weight: qkvw, bias: qkvb + l * 3 * C, K: C, N: 3 * C, lora: lora?.weights(layer: l, .attn), int8: int8?.matrix(layer: l, 0), rows: rows),
                            proj: Linear(weight: attprojw, bias: attprojb + l * C, K: C, N: C, lora: lora?.weights(layer: l, .attnProj), int8: int8?.matrix(layer: l, 1), rows: rows),
                            ln2w: ln2w + l * C, ln2b: ln2b + l * C,
                            fc: Linear(weight: fcw, bias: fcb + l * H, K: C, N: H, lora: lora?.weights(layer: l, .fc), int8: int8?.matrix(layer: l, 2), rows: rows),
                            fcproj: Linear(weight: fcprojw, bias: fcprojb + l * C, K: H, N: C, lora: lora?.weights(layer: l, .mlpProj), int8: int8?.matrix(layer: l, 3), rows: rows))
    }
}
