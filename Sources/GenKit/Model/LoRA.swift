import GenKernels
import FoundationEssentials
import Glibc

/// What a LoRA run adapts, and how much.
public struct LoRAConfig: Sendable, Equatable {
    public var rank: Int
    public var alpha: Float
    public var dropout: Float = 0
    public var targets: [LoRATarget] = LoRATarget.allCases
    /// The largest rank gen builds (`--lora`, and an adapter_config.json's r).
    public static let maxRank = 4096

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

    public init(a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, r: Int, scaling: Float) {
        self.a = a
        self.b = b
        self.r = r
        self.scaling = scaling
    }
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
                let prefix = Self.layerPrefix + "\(l).\(t.rawValue)"
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

extension LoRAAdapters {
    /// What PEFT's tensor names for a GPT-2 start with, before the layer's number.
    static let layerPrefix = "base_model.model.transformer.h."

    /// The layer a PEFT tensor name belongs to (`base_model.model.transformer.h.3.…` → 3), or nil.
    public static func layer(ofTensorNamed name: String) -> Int? {
        guard name.hasPrefix(layerPrefix) else { return nil }
        let digits = name.dropFirst(layerPrefix.count).prefix { $0.isASCII && $0.isNumber }
        guard name.dropFirst(layerPrefix.count + digits.count).first == "." else { return nil }
        return Int(digits)
    }

    /// Reads a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) made
    /// for a GPT-2 of shape `model`: by gen or by PEFT.
    /// - Throws: `GenError` for a config gen does not compute (DoRA, rsLoRA, per-layer ranks,
    ///   trained biases), a missing tensor or a wrong shape.
    public static func load(folder: String, model: GPTConfig) throws -> LoRAAdapters {
        let adapters = try LoRAAdapters(config: readConfig(folder: folder).config, model: model)
        let file = try SafeTensorsFile(path: folder + "/adapter_model.safetensors")
        for t in adapters.tensors {
            guard let e = file.entries[t.name] ?? file.entries[t.name.replacing(".weight", with: ".default.weight")] else {
                throw GenError("\(folder): missing tensor \(t.name)")
            }
            guard e.shape == t.shape else { throw GenError("\(folder): tensor \(t.name) has shape \(e.shape), expected \(t.shape) (is the adapter for this model?)") }
            let key = file.entries[t.name] != nil ? t.name : t.name.replacing(".weight", with: ".default.weight")
            try file.copyFloats(key, into: adapters.parameters.pointer + t.offset, count: t.count)
        }
        return adapters
    }

    /// An adapter folder's adapter_config.json: the adapters' configuration, and the base model
    /// it names (`base_model_name_or_path`), if any.
    /// - Throws: `GenError` for a config gen does not compute.
    public static func readConfig(folder: String) throws -> (config: LoRAConfig, base: String?) {
        let configPath = folder + "/adapter_config.json"
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw GenError("\(folder) is not a PEFT adapter folder (no readable adapter_config.json)")
        }
        let o = try JSON.object(data, name: configPath)
        guard o["peft_type"]?.string == "LORA" else { throw GenError("\(configPath): peft_type is not LORA") }
        guard let r = o["r"]?.int, let alpha = o["lora_alpha"]?.double.map(Float.init) else {
            throw GenError("\(configPath): r or lora_alpha is missing")
        }
        guard (1...LoRAConfig.maxRank).contains(r) else { throw GenError("\(configPath): r is \(r); gen builds ranks 1 to \(LoRAConfig.maxRank)") }
        guard alpha.isFinite else { throw GenError("\(configPath): lora_alpha is not a finite number") }
        for key in ["use_dora", "use_rslora"] where o[key]?.bool == true {
            throw GenError("\(configPath): \(key) is true; gen computes plain LoRA")
        }
        if let bias = o["bias"]?.string, bias != "none" { throw GenError("\(configPath): bias is \"\(bias)\"; gen's adapters train no biases") }
        for key in ["rank_pattern", "alpha_pattern"] where !(o[key]?.object ?? [:]).isEmpty {
            throw GenError("\(configPath): \(key) is not empty; gen uses one rank and alpha for every layer")
        }
        for key in ["layers_to_transform", "modules_to_save"] where o[key] != nil && o[key]?.isNull == false {
            throw GenError("\(configPath): \(key) is set; gen adapts every layer and saves no other modules")
        }
        let names: [String]
        if let list = o["target_modules"]?.strings { names = list } else if let one = o["target_modules"]?.string { names = [one] } else {
            throw GenError("\(configPath): target_modules is missing")
        }
        var targets = Set<LoRATarget>()
        for n in names {
            let matched = LoRATarget.allCases.filter { $0.rawValue == n || $0.rawValue.hasSuffix("." + n) }
            guard !matched.isEmpty else { throw GenError("\(configPath): target module \"\(n)\" is not a GPT-2 projection (c_attn, attn.c_proj, c_fc, mlp.c_proj)") }
            targets.formUnion(matched)
        }
        let dropout = o["lora_dropout"]?.double.map(Float.init) ?? 0
        guard dropout >= 0 && dropout < 1 else { throw GenError("\(configPath): lora_dropout must be in [0, 1) (got \(dropout))") }
        return (LoRAConfig(rank: r, alpha: alpha, dropout: dropout, targets: LoRATarget.allCases.filter(targets.contains)),
                o["base_model_name_or_path"]?.string)
    }

    /// Writes the adapters as PEFT does: adapter_config.json and adapter_model.safetensors, each
    /// whole before it is renamed into place.
    public func save(folder: String, baseModel: String) throws {
        try prepareWeights(folder: folder, metadata: [:]).commit()
        try writeConfig(folder: folder, baseModel: baseModel)
    }

    /// adapter_model.safetensors, whole under a temporary name, for `commit`.
    func prepareWeights(folder: String, metadata: [String: String]) throws -> PendingFile {
        let items = tensors.map {
            SafeTensorsWriter.Item(name: $0.name, shape: $0.shape,
                                   bytes: UnsafeRawBufferPointer(start: parameters.pointer + $0.offset, count: $0.count * 4))
        }
        return try SafeTensorsWriter.prepare(items, metadata: metadata.merging(["format": "pt"]) { _, b in b },
                                             for: folder + "/adapter_model.safetensors")
    }

    /// adapter_config.json.
    public func writeConfig(folder: String, baseModel: String) throws {
        let config: JSON = .object([
            "peft_type": .string("LORA"), "task_type": .string("CAUSAL_LM"), "r": .int(self.config.rank),
            "lora_alpha": .double(Double(self.config.alpha)), "lora_dropout": .double(Double(self.config.dropout)),
            "target_modules": .array(self.config.targets.map { .string($0.peftName) }),
            "fan_in_fan_out": .bool(true), "bias": .string("none"), "base_model_name_or_path": .string(baseModel),
            "inference_mode": .bool(true), "init_lora_weights": .bool(true), "use_dora": .bool(false), "use_rslora": .bool(false),
        ])
        try Array(config.serialized(pretty: true).utf8).withUnsafeBytes { try SafeTensorsWriter.writeRaw($0, to: folder + "/adapter_config.json") }
    }
}

extension GPTModel {
    /// A model whose projections are the base's plus its adapters' products, merged into plain
    /// weights: W + scaling · Aᵀ·Bᵀ for each adapted projection (weights [in, out]).
    public func merged() -> GPTModel {
        precondition(!samplingOnly, "a model loaded for sampling only is not merged")
        let out = GPTModel(config: config)
        out.parameters.pointer.update(from: parameters.pointer, count: parameters.count)
        guard let adapters, let lora = views.lora else { return out }
        let v = out.views
        for l in 0..<config.nLayer {
            let w = v.layer(l)
            for (t, linear) in [(LoRATarget.attn, w.attn), (.attnProj, w.proj), (.fc, w.fc), (.mlpProj, w.fcproj)] {
                guard let a = lora.weights(layer: l, t) else { continue }
                // W (K,N) += scaling · Aᵀ (K,r) · Bᵀ (r,N)
                let scaled = FloatBuffer(count: a.r * linear.K)
                scaled.pointer.update(from: a.a, count: a.r * linear.K)
                AdamW.scale(scaled.pointer, count: a.r * linear.K, by: adapters.config.scaling)
                Matmul.product(transA: true, transB: true, M: linear.K, N: linear.N, K: a.r, scaled.pointer, lda: linear.K,
                               a.b, ldb: a.r, beta: 1, linear.weight, ldc: linear.N)
            }
        }
        return out
    }
}
