import GenKernels
import Foundation

/// What a LoRA run adapts, and how much.
public struct LoRAConfig: Sendable, Equatable {
    public var rank: Int
    public var alpha: Float
    public var dropout: Float = 0
    public var targets: [LoRATarget] = LoRATarget.allCases

    public init(rank: Int, alpha: Float, dropout: Float = 0, targets: [LoRATarget] = LoRATarget.allCases) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
    }

    /// PEFT's scaling of the adapter's output: alpha / r.
    public var scaling: Float { alpha / Float(rank) }
}

/// The projections of a block that an adapter can sit beside, by their module names.
public enum LoRATarget: String, CaseIterable, Sendable {
    case attn = "attn.c_attn", attnProj = "attn.c_proj", fc = "mlp.c_fc", mlpProj = "mlp.c_proj"

    /// The name in PEFT's `target_modules` (a suffix of the module's name).
    public var peftName: String {
        switch self {
        case .attn: return "c_attn"
        case .attnProj: return "attn.c_proj"
        case .fc: return "c_fc"
        case .mlpProj: return "mlp.c_proj"
        }
    }

    /// Position in `allCases`.
    var index: Int {
        switch self {
        case .attn: return 0
        case .attnProj: return 1
        case .fc: return 2
        case .mlpProj: return 3
        }
    }

    /// (in, out) of the projection.
    func shape(_ c: GPTConfig) -> (K: Int, N: Int) {
        switch self {
        case .attn: return (c.nEmbd, 3 * c.nEmbd)
        case .attnProj: return (c.nEmbd, c.nEmbd)
        case .fc: return (c.nEmbd, c.hidden)
        case .mlpProj: return (c.hidden, c.nEmbd)
        }
    }
}

/// One projection's adapter (or its gradient): A (r,K) and B (N,r), PEFT's layouts of
/// `lora_A.weight` and `lora_B.weight`. The projection adds scaling · (x·Aᵀ)·Bᵀ.
public struct LoRAWeights {
    let a: UnsafeMutablePointer<Float>   // (r,K)
    let b: UnsafeMutablePointer<Float>   // (N,r)
    let r: Int
    let scaling: Float
}

/// Views of a buffer laid out as `LoRAAdapters` (the adapters, or their gradients).
public struct LoRAViews {
    let base: UnsafeMutablePointer<Float>
    /// (offset of A, offset of B) per layer and `LoRATarget.allCases` index; nil where no adapter.
    let offsets: [[(Int, Int)?]]
    let r: Int
    let scaling: Float

    func weights(layer l: Int, _ t: LoRATarget) -> LoRAWeights? {
        guard let (a, b) = offsets[l][t.index] else { return nil }
        return LoRAWeights(a: base + a, b: base + b, r: r, scaling: scaling)
    }
}

/// Every adapter of a model, in one allocation, under PEFT's names.
public final class LoRAAdapters {
    public struct Tensor: Sendable {
        /// PEFT's name in adapter_model.safetensors.
        public var name: String
        public var shape: [Int]
        public var offset: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let config: LoRAConfig
    public let model: GPTConfig
    public let tensors: [Tensor]
    public let parameters: FloatBuffer
    let offsets: [[(Int, Int)?]]

    /// - Throws: `GenError.usage` for a rank below 1.
    public init(config: LoRAConfig, model: GPTConfig) throws {
        guard config.rank >= 1 else { throw GenError.usage("the LoRA rank must be at least 1", setting: "lora") }
        guard !config.targets.isEmpty else { throw GenError.usage("LoRA needs at least one target", setting: "lora-targets") }
        self.config = config
        self.model = model
        var tensors: [Tensor] = []
        var offsets: [[(Int, Int)?]] = []
        var at = 0
        let r = config.rank
        for l in 0..<model.nLayer {
            var row: [(Int, Int)?] = []
            for t in LoRATarget.allCases {
                guard config.targets.contains(t) else { row.append(nil); continue }
                let (K, N) = t.shape(model)
                let prefix = "base_model.model.transformer.h.\(l).\(t.rawValue)"
                tensors.append(Tensor(name: prefix + ".lora_A.weight", shape: [r, K], offset: at))
                tensors.append(Tensor(name: prefix + ".lora_B.weight", shape: [N, r], offset: at + r * K))
                row.append((at, at + r * K))
                at += r * K + N * r
            }
            offsets.append(row)
        }
        self.tensors = tensors
        self.offsets = offsets
        parameters = FloatBuffer(count: at)
    }

    /// PEFT's initialisation: A Kaiming-uniform (bound 1/sqrt(in)), B zero, so that the
    /// adapted model starts equal to the base.
    public func initialize(seed: UInt64) {
        var rng = Random(seed: seed)
        for t in tensors {
            let p = parameters.pointer + t.offset
            if t.name.hasSuffix("lora_A.weight") {
                let bound = 1 / Float(t.shape[1]).squareRoot()
                for i in 0..<t.count { p[i] = (2 * rng.nextFloat() - 1) * bound }
            } else {
                p.update(repeating: 0, count: t.count)
            }
        }
    }

    /// Views of `buffer` (the adapters' parameters or a buffer of the same layout).
    func views(_ buffer: UnsafeMutablePointer<Float>) -> LoRAViews {
        LoRAViews(base: buffer, offsets: offsets, r: config.rank, scaling: config.scaling)
    }
}
