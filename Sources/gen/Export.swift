import FoundationEssentials
import Glibc
import GenKit

/// `gen merge`: a model with its LoRA adapters merged into plain weights.
struct MergeOptions {
    static let spec = CommandSpec(
        name: "merge",
        abstract: "Merge LoRA adapters into a model's weights and write the merged model.",
        discussion: "Each adapted projection's weight becomes W + alpha/r · Aᵀ·Bᵀ. --from and --adapter are never modified.",
        options: [
            fromOption,
            OptionSpec(name: "adapter", value: "dir", help: "The PEFT adapter folder to merge.", required: true),
            OptionSpec(name: "out", value: "file", help: "Where to write the merged model.", required: true),
            OptionSpec(name: "force", value: nil, help: "Replace an existing --out file."),
        ])

    var from: String, adapter: String, out: String, force: Bool

    init(_ a: ParsedArguments) throws {
        from = a.string("from")!
        adapter = a.string("adapter")!
        out = a.string("out")!
        force = a.has("force")
    }

    func run() throws -> Int32 {
        let outputs = try RunOutputs(out: out, log: nil, inputs: [from, adapter], replace: force, resume: false)
        let ck = try loadModel(from, adapter: adapter)
        var meta = ck.metadata
        meta["merged_from"] = Paths.fileName(of: from) + " + " + Paths.fileName(of: adapter)
        for k in ["checkpoint_id", "gen_source", "source"] { meta[k] = nil }
        try withExtendedLifetime(outputs) {
            try Checkpoint(model: ck.model.merged(), tokenizer: ck.tokenizer, metadata: meta).save(out)
        }
        note("wrote \(out): \(Paths.fileName(of: from)) with the adapters of \(adapter) merged")
        return 0
    }
}

/// `gen export`: a model as a Hugging Face GPT-2 folder.
struct ExportOptions {
    static let spec = CommandSpec(
        name: "export",
        abstract: "Write a model as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json).",
        discussion: """
        transformers loads the folder with GPT2LMHeadModel.from_pretrained(DIR) and \
        AutoTokenizer.from_pretrained(DIR). A character-level model's tokenizer has no Hugging Face \
        form: its weights and config are written, and its vocabulary stays in the metadata of \
        model.safetensors (key "tokenizer"). The folder is created; an existing one is refused \
        unless it is empty or --force is given.
        """,
        options: [
            fromOption,
            OptionSpec(name: "hf", value: "dir", help: "The folder to write.", required: true),
            OptionSpec(name: "force", value: nil, help: "Write into an existing folder, replacing its files of these names."),
        ])

    var from: String, folder: String, force: Bool

    init(_ a: ParsedArguments) throws {
        from = a.string("from")!
        folder = a.string("hf")!
        force = a.has("force")
    }

    func run() throws -> Int32 {
        try refuseStandardOutput(folder, flag: "--hf", folder: true)
        let fm = FileManager.default
        if fm.fileExists(atPath: folder) {
            guard isFolder(folder) else { throw GenError("\(folder) exists and is not a folder") }
            let contents = try fm.contentsOfDirectory(atPath: folder)
            if !contents.isEmpty && !force { throw GenError("\(folder) is not empty; pass --force to write into it, or choose another --hf") }
        }
        let ck = try Checkpoint.load(from)
        if let id = fileIdentity(from), let inside = fileIdentity(folder + "/model.safetensors"), id == inside {
            throw GenError("--from \(from) is the model.safetensors of --hf; choose another folder")
        }
        if !fm.fileExists(atPath: folder) {
            do { try fm.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
                throw GenError("cannot create \(folder): \(describe(error))")
            }
        }
        let files = try HuggingFaceGPT2.export(ck, to: folder)
        note("wrote \(folder): \(files.joined(separator: ", "))" + (ck.tokenizer is BPETokenizer ? "" : " (a character-level tokenizer has no Hugging Face form; its vocabulary is in model.safetensors's metadata)"))
        return 0
    }
}
