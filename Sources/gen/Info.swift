import FoundationEssentials
import Glibc
import GenKit

/// `gen info`: a model file's shape, tokenizer and training facts.
struct InfoOptions {
    static let spec = CommandSpec(
        name: "info",
        abstract: "Describe a model file (shape, tokenizer, training facts) or a LoRA adapter folder.",
        arguments: [ArgumentSpec(name: "file", help: "A gen model file, a Hugging Face GPT-2 folder or .safetensors file, or a LoRA adapter folder.")],
        options: [OptionSpec(name: "json", value: nil, help: "Print the description as one JSON object.")])

    /// Training facts in the metadata, and whether each is a number in JSON.
    static let facts: [(key: String, numeric: Bool)] = [
        ("step", true), ("train_loss", true), ("val_loss", true), ("corpus", false), ("date", false),
        ("seed", true), ("finetuned_from", false), ("generator", false),
    ]

    var path: String
    var json: Bool

    init(_ a: ParsedArguments) throws {
        path = a.positionals[0]
        json = a.has("json")
    }

    func run() throws -> Int32 {
        if isFolder(path) && !FileManager.default.fileExists(atPath: path + "/config.json")
            && FileManager.default.fileExists(atPath: path + "/adapter_config.json") {
            return try adapter()
        }
        let ck = try Checkpoint.load(path, .headerOnly)
        let c = ck.model.config
        if json {
            var fields = [
                "\"file\":\(jsonString(path))",
                "\"config\":{\"n_layer\":\(c.nLayer),\"n_head\":\(c.nHead),\"n_embd\":\(c.nEmbd),\"block_size\":\(c.blockSize),\"vocab_size\":\(c.vocabSize),\"n_inner\":\(c.hidden),\"layer_norm_epsilon\":\(c.layerNormEpsilon),\"activation_function\":\(jsonString(c.activation.rawValue))}",
                "\"source\":\(jsonString(ck.isHuggingFace ? "huggingface" : "gen"))",
                "\"parameters\":\(ck.model.parameterCount)",
                "\"tokenizer\":{\"type\":\(jsonString(ck.tokenizer.kind)),\"vocab_size\":\(ck.tokenizer.vocabSize)}",
            ]
            for (k, numeric) in Self.facts {
                guard let v = ck.metadata[k] else { continue }
                let number = numeric ? Double(v).flatMap { $0.isFinite ? v : nil } : nil
                fields.append("\(jsonString(k)):\(number ?? jsonString(v))")
            }
            try Output.line("{" + fields.joined(separator: ",") + "}")
        } else {
            var s = ck.isHuggingFace ? "\(path): Hugging Face GPT-2 model\n"
                : "\(path): gen model, format version \(ck.metadata["gen_format_version"] ?? ck.metadata["format_version"] ?? "?")\n"
            s += "  shape       \(c.nLayer) layers, \(c.nHead) heads, \(c.nEmbd) channels, context \(c.blockSize)\n"
            s += "  parameters  \(ck.model.parameterCount)\n"
            s += "  tokenizer   \(ck.tokenizer.kind), \(ck.tokenizer.vocabSize) tokens\n"
            for (k, _) in Self.facts {
                if let v = ck.metadata[k] { s += "  " + String((k.replacing("_", with: " ") + String(repeating: " ", count: 12)).prefix(12)) + v + "\n" }
            }
            try Output.write(s)
        }
        return 0
    }

    /// A PEFT LoRA adapter folder: its configuration, and what its tensors and metadata say
    /// (no base model is needed).
    func adapter() throws -> Int32 {
        let (config, base) = try LoRAAdapters.readConfig(folder: path)
        let file = try SafeTensorsFile(path: path + "/adapter_model.safetensors")
        let parameters = file.entries.values.reduce(0) { $0 + $1.count }
        let layers = Set(file.entries.keys.compactMap(LoRAAdapters.layer(ofTensorNamed:))).count
        let step = file.metadata["step"].flatMap { Int($0) }
        let targets = config.targets.map(\.peftName)
        if json {
            var fields = [
                "\"file\":\(jsonString(path))", "\"source\":\"lora\"", "\"rank\":\(config.rank)", "\"alpha\":\(config.alpha)",
                "\"dropout\":\(config.dropout)", "\"targets\":[\(targets.map(jsonString).joined(separator: ","))]",
                "\"layers\":\(layers)", "\"parameters\":\(parameters)",
            ]
            if let base { fields.append("\"base_model\":\(jsonString(base))") }
            if let step { fields.append("\"step\":\(step)") }
            try Output.line("{" + fields.joined(separator: ",") + "}")
        } else {
            var s = "\(path): LoRA adapters (PEFT)\n"
            s += "  rank        \(config.rank), alpha \(cFormat("%g", Double(config.alpha))) (scaling \(cFormat("%g", Double(config.scaling)))), dropout \(cFormat("%g", Double(config.dropout)))\n"
            s += "  targets     \(targets.joined(separator: ", ")) in \(layers) layer\(layers == 1 ? "" : "s")\n"
            s += "  parameters  \(parameters)\n"
            if let base { s += "  base model  \(base)\n" }
            if let step { s += "  step        \(step)\n" }
            try Output.write(s)
        }
        return 0
    }
}
