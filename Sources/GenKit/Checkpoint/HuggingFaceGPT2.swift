import GenKernels
import FoundationEssentials
import Glibc

/// Hugging Face's GPT-2 files: a folder with `config.json`, `model.safetensors` (or shards
/// listed in `model.safetensors.index.json`) and `tokenizer.json` (or `vocab.json` +
/// `merges.txt`); or a safetensors file with its `config.json` beside it. gen computes GPT-2
/// exactly as transformers does, so the tensors are used as they are (F16 and BF16 converted
/// to F32); variants gen does not compute are refused naming the key.
public enum HuggingFaceGPT2 {
    /// The model in `folder`.
    public static func load(folder: String, _ options: LoadOptions = []) throws -> Checkpoint {
        let fm = FileManager.default
        let configPath = folder + "/config.json"
        guard fm.fileExists(atPath: configPath) else {
            if fm.fileExists(atPath: folder + "/model.safetensors") || fm.fileExists(atPath: folder + "/pytorch_model.bin") {
                throw GenError("\(folder) has no config.json; a Hugging Face model folder needs one")
            }
            throw GenError("\(folder) is a folder, not a model file (nor a Hugging Face model folder with a config.json)")
        }
        var files: [SafeTensorsFile] = []
        if fm.fileExists(atPath: folder + "/model.safetensors") {
            let file = try SafeTensorsFile(path: folder + "/model.safetensors")
            // A folder gen exported: its own file carries its tokenizer (a character-level one too).
            if file.metadata["gen_format_version"] != nil { return try Checkpoint.load(folder + "/model.safetensors", options) }
            files = [file]
        } else if fm.fileExists(atPath: folder + "/model.safetensors.index.json") {
            let index = folder + "/model.safetensors.index.json"
            guard let data = fm.contents(atPath: index),
                  let map = (try? JSON.parse(data))?["weight_map"]?.object,
                  map.values.allSatisfy({ $0.string != nil }) else {
                throw GenError("\(index) is not a safetensors index (no weight_map)")
            }
            for shard in Set(map.values.compactMap(\.string)).sorted() {
                guard !shard.contains("/") else { throw GenError("\(index) names a shard outside the folder: \(shard)") }
                files.append(try SafeTensorsFile(path: folder + "/" + shard))
            }
        } else if fm.fileExists(atPath: folder + "/pytorch_model.bin") {
            throw pickleRefusal(folder)
        } else {
            throw GenError("\(folder) has no model.safetensors (nor model.safetensors.index.json)")
        }
        let config = try self.config(at: configPath)
        let tokenizer = try self.tokenizer(in: folder)
        return try checkpoint(config, tokenizer, files, name: folder, options)
    }

    /// A safetensors file written by transformers (or by PyTorch's safetensors), with the
    /// config.json and tokenizer files beside it.
    static func load(file: SafeTensorsFile, path: String, _ options: LoadOptions = []) throws -> Checkpoint {
        let folder = Paths.folder(of: path)
        guard FileManager.default.fileExists(atPath: folder + "/config.json") else {
            throw GenError("\(path) is not a gen model, and no config.json is beside it to read it as a Hugging Face GPT-2 model")
        }
        let config = try self.config(at: folder + "/config.json")
        return try checkpoint(config, try tokenizer(in: folder), [file], name: path, options)
    }

    static func checkpoint(_ config: GPTConfig, _ tokenizer: Tokenizer, _ files: [SafeTensorsFile], name: String,
                           _ options: LoadOptions = []) throws -> Checkpoint {
        let names = Set(files.flatMap { $0.entries.keys })
        let key = { (n: String) in names.contains(n) ? n : names.contains("transformer." + n) ? "transformer." + n : nil }
        let model = try Checkpoint.loadWeights(config: config, tokenizer: tokenizer, from: files, name: name, options, key: key)
        // The output head is the token embedding (tied); a separate head is not computed. Compared
        // as stored (the model's embeddings may be rounded to 8 bits by now).
        if !options.contains(.headerOnly), let file = files.first(where: { $0.entries["lm_head.weight"] != nil }),
           let wteKey = key("wte.weight"), let wteFile = files.first(where: { $0.entries[wteKey] != nil }) {
            let count = config.vocabSize * config.nEmbd
            let tied: Bool
            if let h = try file.floatsInPlace("lm_head.weight", count: count), let w = try wteFile.floatsInPlace(wteKey, count: count) {
                tied = (0..<count).allSatisfy { h[$0] == w[$0] }
            } else {
                tied = try file.floats("lm_head.weight") == wteFile.floats(wteKey)
            }
            if !tied { throw GenError("\(name): lm_head.weight differs from wte.weight; gen computes GPT-2 with a tied output head only") }
        }
        return Checkpoint(model: model, tokenizer: tokenizer, metadata: ["gen_source": "huggingface", "source": name])
    }

    /// The refusal of a pickle, with the conversion a user can run.
    static func pickleRefusal(_ folder: String) -> GenError {
        GenError("\(folder) holds pytorch_model.bin (a pickle, which gen never loads); convert it with: python3 -c \"from transformers import GPT2LMHeadModel as M; M.from_pretrained('\(folder)').save_pretrained('\(folder)', safe_serialization=True)\"")
    }

    /// GPT-2's config.json as a `GPTConfig`.
    /// - Throws: `GenError` naming the key of a variant gen does not compute.
    public static func config(at path: String) throws -> GPTConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw GenError("cannot read \(path)") }
        let o = try JSON.object(data, name: path)
        func int(_ key: String) throws -> Int {
            guard let v = o[key]?.int else { throw GenError("\(path): \(key) is missing or not an integer") }
            return v
        }
        func flag(_ key: String) -> Bool { o[key]?.bool ?? false }
        let type = o["model_type"]?.string
        guard type == "gpt2" else { throw GenError("\(path): model_type is \(type.map { "\"\($0)\"" } ?? "missing"); gen computes GPT-2 (model_type \"gpt2\") only") }
        for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"] where flag(key) {
            throw GenError("\(path): \(key) is true; gen does not compute that GPT-2 variant")
        }
        if o["scale_attn_weights"]?.bool == false { throw GenError("\(path): scale_attn_weights is false; gen does not compute that GPT-2 variant") }
        if o["tie_word_embeddings"]?.bool == false { throw GenError("\(path): tie_word_embeddings is false; gen computes GPT-2 with a tied output head only") }
        let positions = o["n_positions"]?.int ?? o["n_ctx"]?.int
        guard let positions else { throw GenError("\(path): n_positions (or n_ctx) is missing") }
        var c = GPTConfig(nLayer: try int("n_layer"), nHead: try int("n_head"), nEmbd: try int("n_embd"),
                          blockSize: positions, vocabSize: try int("vocab_size"))
        if let inner = o["n_inner"], !inner.isNull {
            guard let n = inner.int else { throw GenError("\(path): n_inner is not an integer") }
            c.nInner = n
        }
        if let eps = o["layer_norm_epsilon"] {
            guard let e = eps.double.map(Float.init) else { throw GenError("\(path): layer_norm_epsilon is not a number") }
            c.layerNormEpsilon = e
        }
        switch o["activation_function"]?.string ?? "gelu_new" {
        case "gelu_new", "gelu_pytorch_tanh": c.activation = .geluTanh
        case "gelu": c.activation = .gelu
        case let other: throw GenError("\(path): activation_function \"\(other)\" is not computed by gen (gelu_new, gelu_pytorch_tanh or gelu)")
        }
        do { try c.validate() } catch let e as GenError { throw GenError("\(path): \(e.message)") }
        return c
    }

    /// The tokenizer in a Hugging Face folder: tokenizer.json, else vocab.json + merges.txt.
    public static func tokenizer(in folder: String) throws -> Tokenizer {
        let fm = FileManager.default
        if fm.fileExists(atPath: folder + "/tokenizer.json") { return try BPETokenizer.huggingFace(path: folder + "/tokenizer.json") }
        if fm.fileExists(atPath: folder + "/vocab.json") && fm.fileExists(atPath: folder + "/merges.txt") {
            return try BPETokenizer.gpt2Files(vocab: folder + "/vocab.json", merges: folder + "/merges.txt")
        }
        throw GenError("\(folder) is a folder without a tokenizer (tokenizer.json, or vocab.json and merges.txt)")
    }
}

extension HuggingFaceGPT2 {
    /// config.json for a model of `config` (GPT2LMHeadModel, tied head).
    static func configJSON(_ c: GPTConfig, endOfText: Int32?) -> String {
        var fields: [String] = [
            "\"architectures\": [\"GPT2LMHeadModel\"]", "\"model_type\": \"gpt2\"",
            "\"n_layer\": \(c.nLayer)", "\"n_head\": \(c.nHead)", "\"n_embd\": \(c.nEmbd)",
            "\"n_positions\": \(c.blockSize)", "\"n_ctx\": \(c.blockSize)", "\"vocab_size\": \(c.vocabSize)",
            "\"n_inner\": \(c.nInner.map(String.init) ?? "null")",
            "\"activation_function\": \"\(c.activation == .gelu ? "gelu" : "gelu_new")\"",
            "\"layer_norm_epsilon\": \(c.layerNormEpsilon)", "\"tie_word_embeddings\": true",
            "\"scale_attn_weights\": true", "\"torch_dtype\": \"float32\"",
        ]
        if let eot = endOfText { fields += ["\"bos_token_id\": \(eot)", "\"eos_token_id\": \(eot)"] }
        return "{\n  " + fields.joined(separator: ",\n  ") + "\n}\n"
    }

    /// Writes `checkpoint` as a Hugging Face GPT-2 folder that transformers'
    /// `GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained` load: config.json,
    /// model.safetensors (gen's own file, which says `format` = pt) and, for a BPE tokenizer,
    /// tokenizer.json with tokenizer_config.json. A character-level tokenizer has no Hugging Face
    /// form: its vocabulary stays in model.safetensors's `tokenizer` metadata, and no tokenizer
    /// files are written. Each file is written whole, then renamed into place.
    /// - Returns: the names of the files written.
    @discardableResult
    public static func export(_ checkpoint: Checkpoint, to folder: String) throws -> [String] {
        precondition(!checkpoint.model.samplingOnly, "a model loaded for sampling only is not exported")
        var files = ["config.json", "model.safetensors"]
        let eot = checkpoint.tokenizer.endOfText
        try write(configJSON(checkpoint.model.config, endOfText: eot), to: folder + "/config.json")
        try checkpoint.save(folder + "/model.safetensors")
        if let bpe = checkpoint.tokenizer as? BPETokenizer {
            try bpe.writeHuggingFaceJSON(to: folder + "/tokenizer.json")
            var fields = ["\"tokenizer_class\": \"GPT2Tokenizer\"", "\"model_max_length\": \(checkpoint.model.config.blockSize)",
                          "\"add_prefix_space\": false"]
            if eot != nil {
                fields += ["\"bos_token\": \"<|endoftext|>\"", "\"eos_token\": \"<|endoftext|>\"", "\"unk_token\": \"<|endoftext|>\""]
            }
            try write("{\n  " + fields.joined(separator: ",\n  ") + "\n}\n", to: folder + "/tokenizer_config.json")
            files += ["tokenizer.json", "tokenizer_config.json"]
        }
        return files
    }

    static func write(_ text: String, to path: String) throws {
        let bytes = Array(text.utf8)
        try bytes.withUnsafeBytes { try SafeTensorsWriter.writeRaw($0, to: path) }
    }
}
