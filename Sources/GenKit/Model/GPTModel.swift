import FoundationEssentials
import Glibc
import GenKernels
/// A GPT-2 model's weights: one allocation with named views into it. It holds no gradients,
/// optimizer state or activations; those belong to a `Trainer` or a `Decoder`.
public final class GPTModel {
    public let config: GPTConfig
    public let layout: ParameterLayout
    public let parameters: FloatBuffer
    public private(set) var views: ParameterViews
    /// LoRA adapters beside the projections (nil: none). Every pass of the model uses them.
    public var adapters: LoRAAdapters? {
        didSet { views.lora = adapters.map { $0.views($0.parameters.pointer) } }
    }
    /// The rank of the adapters (0: none), for sizing activations.
    public var loraRank: Int { adapters?.config.rank ?? 0 }

    /// A model with zeroed weights (to be filled by `initialize` or a checkpoint).
    public init(config: GPTConfig) {
        precondition(config.isValid, "invalid model shape")
        self.config = config
        layout = ParameterLayout(config)
        parameters = FloatBuffer(count: layout.count, hugePages: true)
        views = ParameterViews(parameters.pointer, layout)
    }

    /// GPT-2's initialisation: weights N(0, 0.02), the two residual output projections
    /// N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weights 1.
    public func initialize(seed: UInt64) {
        var rng = Random(seed: seed)
        let residualStd = 0.02 / (2 * Double(config.nLayer)).squareRoot()
        for t in layout.tensors {
            let p = parameters.pointer + t.offset
            if t.name.contains("ln_") && t.name.hasSuffix(".weight") {
                p.update(repeating: 1, count: t.count)
            } else if t.shape.count == 1 {
                p.update(repeating: 0, count: t.count)
            } else {
                let std = t.name.hasSuffix("c_proj.weight") ? residualStd : 0.02
                for i in 0..<t.count { p[i] = Float(rng.nextNormal() * std) }
            }
        }
    }

    public var parameterCount: Int { layout.count }

    /// Whether `arrangeForDecoding` has transposed the projections.
    public var arrangedForDecoding: Bool { views.rows }

    /// The model files whose mapped bytes hold the token embeddings or projections read in
    /// place (of a sharded folder, one each can be another), kept open.
    private var mappedFiles: [Data] = []
    /// Whether the token embeddings are read where they lie in the model file
    /// (`readEmbeddingsInPlace`).
    public private(set) var embeddingsInPlace = false
    /// Whether some of the blocks' projections are read where they lie in the model file
    /// (`readProjectionsInPlace`).
    public var projectionsInPlace: Bool { projectionsInFile > 0 }
    /// How many of the blocks' projection weights (four a block) are read in place.
    public private(set) var projectionsInFile = 0
    /// A model only sampled from (arranged for decoding, reading its embeddings or projections
    /// in place, or holding its projections and embeddings in 8 bits alone): it is not trained,
    /// merged, saved, exported or rounded to 8 bits.
    public var samplingOnly: Bool { views.rows || embeddingsInPlace || projectionsInPlace || int8Only }

    /// Whether the projections and token embeddings are held in 8 bits alone, their fp32 values
    /// never stored (`Checkpoint.load` with `[.decoding, .int8]`): the parameter buffer's pages
    /// for them are never touched, so they take no memory. Its batched passes rebuild each
    /// projection, and the output layer a block of rows at a time, from the 8 bits.
    public var int8Only: Bool { views.int8Only }

    /// Reads the token embeddings from `wte`, inside `file`'s bytes (read-only mapped pages),
    /// instead of the buffer: a large model only sampled from starts without copying them. Its
    /// decoding reads them a few rows a token (the 8-bit screen of `Decoder.keep` reads its
    /// own copy), except when every logit is computed.
    func readEmbeddingsInPlace(_ wte: UnsafePointer<Float>, file: Data) {
        views.wte = UnsafeMutablePointer(mutating: wte)
        embeddingsInPlace = true
        mappedFiles.append(file)
    }

    /// Reads the four projection weights of every block, (K,N) as stored, from `weights` (four
    /// a layer, in `Linear`'s order: attention's, its output's, the MLP's two), some or all
    /// inside `file`'s bytes and the others in the buffer. The buffer's pages for those in the
    /// file are never touched: a large model only sampled from starts without copying them into
    /// fresh pages and takes no memory of its own for them (`Checkpoint.loadWeights` reads in
    /// place each that the kernel maps in 2 MB pages, which decoding reads as fast as the
    /// buffer's).
    func readProjectionsInPlace(_ weights: [UnsafePointer<Float>], file: Data) {
        precondition(weights.count == 4 * config.nLayer && !views.rows && views.int8 == nil)
        views.projectionsInPlace = weights.map { UnsafeMutablePointer(mutating: $0) }
        file.withUnsafeBytes { raw in
            let bytes = UnsafeRawPointer(raw.baseAddress!) ..< UnsafeRawPointer(raw.baseAddress! + raw.count)
            projectionsInFile = weights.filter { bytes.contains(UnsafeRawPointer($0)) }.count
        }
        mappedFiles.append(file)
    }

    /// Whether a model only sampled from is worth `arrangeForDecoding`: when its projections
    /// hold at most 32M weights (128 MB). Decoding a single position from rows was faster at
    /// the stories15M and train-M shapes (24 and 42 MB of projections, 8% and 3% on an AMD
    /// EPYC Zen 3), where the transposing pass at load is short; from the stored layout in
    /// slabs (`Matmul.vectorForward`) it was 4% faster at GPT-2 124M's (340 MB), which then
    /// also starts without that pass.
    public static func arrangesForDecoding(_ c: GPTConfig) -> Bool {
        c.nLayer * (4 * c.nEmbd * c.nEmbd + 2 * c.nEmbd * c.hidden) <= 1 << 25
    }

    /// Stores the four projections of every block transposed, (N,K), so that a single position
    /// (decoding) reads each output's weights as one contiguous row — one stream per thread —
    /// and a batch (a prompt) goes to sgemm with the transposed flag. The model computes the same
    /// function but can no longer be trained, merged or saved: for a model that is only sampled.
    public func arrangeForDecoding() {
        guard !views.rows, views.int8 == nil else { return }
        precondition(!projectionsInPlace, "projections read in place from a file are not rearranged")
        let scratch = FloatBuffer(count: config.largestProjection)
        for l in 0..<config.nLayer {
            let w = views.layer(l)
            for linear in [w.attn, w.proj, w.fc, w.fcproj] {
                Matmul.transpose(scratch.pointer, linear.weight, K: linear.K, N: linear.N)
                linear.weight.update(from: scratch.pointer, count: linear.K * linear.N)
            }
        }
        views.rows = true
    }

    /// For a loader that stored the projections transposed itself.
    func markArrangedForDecoding() { views.rows = true }

    /// For a loader that rounded the projections and embeddings into `weights` itself.
    func useInt8(_ weights: Int8Weights) { views.int8 = weights }

    /// Rounds the four projections of every block and the token embeddings to 8 bits in blocks
    /// of 64 values with one scale each (`Int8Blocks`), and keeps the 8-bit copy, which every
    /// single-position pass (decoding) then reads: a quarter of the bytes. The fp32 weights are
    /// overwritten with the rounded values, so batched passes (a prompt, evaluation) compute the
    /// same model. Cannot be undone; done once.
    public func roundToInt8() {
        guard views.int8 == nil else { return }   // rounded already (`roundToInt8`, or as loaded)
        precondition(!samplingOnly, "a model loaded for sampling only is not rounded")
        views.int8 = Int8Weights(views, config: config)
    }
}
