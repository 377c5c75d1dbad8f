import FoundationEssentials
import Glibc
import GenKit

/// `gen train` and `gen finetune`: options decoded once; the run itself is a `TrainingRun`.
struct TrainOptions {
    static let shapeOptions: [OptionSpec] = [
        OptionSpec(name: "layers", value: "n", help: "Transformer blocks.", defaultValue: "4"),
        OptionSpec(name: "heads", value: "n", help: "Attention heads per block.", defaultValue: "4"),
        OptionSpec(name: "embd", value: "n", help: "Embedding width (a multiple of --heads).", defaultValue: "128"),
        OptionSpec(name: "context", value: "n", help: "Context length in tokens.", defaultValue: "64"),
        OptionSpec(name: "tokenizer", value: "kind", help: "char, bpe (trained on the corpus), or a tokenizer.json to reuse.", defaultValue: "char"),
        OptionSpec(name: "vocab-size", value: "n", help: "Vocabulary size with --tokenizer bpe.", defaultValue: "1024"),
        OptionSpec(name: "pattern", value: "name", help: "Pre-tokenization pattern with --tokenizer bpe: gpt2 or gpt4.", defaultValue: "gpt2"),
    ]

    static let runOptions: [OptionSpec] = [
        OptionSpec(name: "out", value: "file", help: "Where to write the model (and <file>.state).", defaultValue: "model.safetensors"),
        OptionSpec(name: "dropout", value: "p", help: "Dropout on the embeddings, attention weights and residual branches.", defaultValue: "0"),
        OptionSpec(name: "batch", value: "n", help: "Sequences per micro-batch.", defaultValue: "12"),
        OptionSpec(name: "accum", value: "n", help: "Micro-batches per optimizer step.", defaultValue: "1"),
        OptionSpec(name: "steps", value: "n", help: "Optimizer steps in all (the learning rate reaches --min-lr at the last).", defaultValue: "2000"),
        OptionSpec(name: "lr", value: "x", help: "Peak learning rate.", defaultValue: "1e-3"),
        OptionSpec(name: "min-lr", value: "x", help: "Learning rate at the end of the cosine decay.", defaultValue: "1e-4"),
        OptionSpec(name: "warmup", value: "n", help: "Steps of linear warmup.", defaultValue: "100"),
        OptionSpec(name: "weight-decay", value: "x", help: "AdamW weight decay (on weight matrices only).", defaultValue: "0.1"),
        OptionSpec(name: "beta1", value: "x", help: "AdamW beta1.", defaultValue: "0.9"),
        OptionSpec(name: "beta2", value: "x", help: "AdamW beta2.", defaultValue: "0.99"),
        OptionSpec(name: "grad-clip", value: "x", help: "Clip the global gradient norm to this (0: off).", defaultValue: "1.0"),
        OptionSpec(name: "val-fraction", value: "x", help: "Share of the corpus (its end) kept for validation.", defaultValue: "0.1"),
        OptionSpec(name: "eval-every", value: "n", help: "Steps between validation losses (0: only at the end).", defaultValue: "250"),
        OptionSpec(name: "eval-batches", value: "n", help: "Batches averaged for a validation loss.", defaultValue: "20"),
        OptionSpec(name: "save-every", value: "n", help: "Steps between checkpoints (0: only at the end).", defaultValue: "500"),
        OptionSpec(name: "seed", short: "s", value: "n", help: "Seed for initialisation, batches and dropout.", defaultValue: "1337"),
        threadsOption,
        OptionSpec(name: "log", value: "file", help: "Append one JSON object per step and per evaluation to this file (- for standard output)."),
        OptionSpec(name: "print-every", value: "n", help: "Steps between progress lines when stderr is not a terminal.", defaultValue: "50"),
        OptionSpec(name: "resume", value: nil, help: "Continue the run saved in --out and its .state file."),
        OptionSpec(name: "force", value: nil, help: "Replace an existing --out file instead of refusing."),
        OptionSpec(name: "quiet", value: nil, help: "Print no progress."),
    ]

    static let trainSpec = CommandSpec(
        name: "train",
        abstract: "Train a GPT-2 model on text.",
        discussion: """
        With --tokenizer char the vocabulary is every character (Unicode scalar) of the corpus; with \
        --tokenizer bpe a byte-level BPE of --vocab-size tokens is first learned from it. The first (1 - val-fraction) \
        of the text trains, the rest validates. Progress goes to stderr; Ctrl-C (or SIGTERM) finishes the step, \
        saves and exits 130; a second one stops at once.
        """,
        arguments: [ArgumentSpec(name: "corpus", help: "Text files (UTF-8) to train on, concatenated; '-' reads standard input.", repeated: true)],
        options: Array(runOptions.prefix(1)) + shapeOptions + runOptions.dropFirst())

    /// Finetuning's defaults differ; the shape comes from --from, so the shape options are
    /// accepted only to be refused with a clear message.
    static let finetuneSpec = CommandSpec(
        name: "finetune",
        abstract: "Continue training a model on new text, with fresh optimizer state.",
        discussion: "The tokenizer and shape come from --from, which is never modified.",
        arguments: [ArgumentSpec(name: "corpus", help: "Text files (UTF-8) to train on; '-' reads standard input.", repeated: true)],
        options: [fromOption]
            + runOptions.map { o in
                var o = o
                switch o.name {
                case "out": o.defaultValue = "<from>-finetuned.safetensors"
                case "steps": o.defaultValue = "500"
                case "lr": o.defaultValue = "3e-4"
                case "min-lr": o.defaultValue = "3e-5"
                case "warmup": o.defaultValue = "20"
                case "eval-every": o.defaultValue = "100"
                default: break
                }
                return o
            }
            + shapeOptions.map { o in var o = o; o.hidden = true; return o }
            + [OptionSpec(name: "skip-unknown", value: nil, help: "Drop characters the model does not know (and say how many) instead of refusing."),
               OptionSpec(name: "lora", value: "r", help: "Train LoRA adapters of this rank instead of every weight; --out is then a PEFT adapter folder (default: <from>-lora)."),
               OptionSpec(name: "lora-alpha", value: "a", help: "LoRA scaling numerator: the adapters add alpha/r · (x·Aᵀ)·Bᵀ (default: 2·r)."),
               OptionSpec(name: "lora-dropout", value: "p", help: "Dropout on the adapters' inputs (PEFT's lora_dropout).", defaultValue: "0"),
               OptionSpec(name: "lora-targets", value: "list", help: "Projections to adapt, comma-separated.", defaultValue: "c_attn,attn.c_proj,c_fc,mlp.c_proj")])

    var corpus: [String]
    var from: String?
    var out: String
    var config: GPTConfig                  // vocabulary size set once the tokenizer is known
    var tokenizerChoice: String
    var vocabSize: Int
    var pattern: SplitPattern
    var settings = TrainingSettings()
    var options = TrainingRun.Options()
    var valFraction: Float
    var saveEvery: Int
    var printEvery: Int
    var log: String?
    var resume: Bool, force: Bool, quiet: Bool, skipUnknown: Bool
    var lora: LoRAConfig?

    init(_ a: ParsedArguments, finetune: Bool) throws {
        if finetune {
            for o in Self.shapeOptions where a.has(o.name) {
                throw GenError.usage("finetune takes the model's shape from --from; '--\(o.name)' cannot be changed")
            }
        }
        corpus = a.positionals
        from = a.string("from")
        out = a.string("out")!
        if finetune && a.has("lora") {
            let r = try a.int("lora", min: 1, max: LoRAConfig.maxRank)
            let alpha = a.has("lora-alpha") ? try a.float("lora-alpha", min: 0) : Float(2 * r)
            var targets: [LoRATarget] = []
            for name in a.string("lora-targets")!.split(separator: ",").map(String.init) {
                guard let t = LoRATarget.allCases.first(where: { $0.peftName == name || $0.rawValue == name }) else {
                    throw GenError.usage("The value '\(name)' is invalid for '--lora-targets <list>': c_attn, attn.c_proj, c_fc or mlp.c_proj")
                }
                if !targets.contains(t) { targets.append(t) }
            }
            lora = LoRAConfig(rank: r, alpha: alpha, dropout: try a.float("lora-dropout", min: 0, max: 0.95), targets: targets)
        } else if a.has("lora-alpha") || a.has("lora-targets") || a.has("lora-dropout") {
            throw GenError.usage("--lora-alpha, --lora-dropout and --lora-targets go with --lora <r>")
        }
        if let from, !a.has("out") { out = outputBeside(from, suffix: lora == nil ? "-finetuned.safetensors" : "-lora") }
        config = GPTConfig(nLayer: try a.int("layers", min: 1), nHead: try a.int("heads", min: 1), nEmbd: try a.int("embd", min: 1),
                           blockSize: try a.int("context", min: 1), vocabSize: 1)
        tokenizerChoice = a.string("tokenizer")!
        vocabSize = try a.int("vocab-size", min: 257, max: 1 << 22)
        pattern = SplitPattern(rawValue: try a.choice("pattern", ["gpt2", "gpt4"]))!
        settings.batchSize = try a.int("batch", min: 1)
        settings.accumulation = try a.int("accum", min: 1)
        settings.steps = try a.int("steps", min: 1)
        settings.learningRate = try a.float("lr", min: 0)
        settings.minLearningRate = try a.float("min-lr", min: 0)
        settings.warmup = try a.int("warmup", min: 0)
        settings.weightDecay = try a.float("weight-decay", min: 0)
        settings.beta1 = try a.float("beta1", min: 0, max: 0.999999)
        settings.beta2 = try a.float("beta2", min: 0, max: 0.999999)
        settings.gradClip = try a.float("grad-clip", min: 0)
        settings.dropout = try a.float("dropout", min: 0, max: 0.95)
        valFraction = try a.float("val-fraction", min: 0, max: 0.5)
        options.evalEvery = try a.int("eval-every", min: 0)
        options.evalBatches = try a.int("eval-batches", min: 1)
        options.seed = UInt64(try a.int("seed", min: 0))
        options.threads = try threadCount(a)
        saveEvery = try a.int("save-every", min: 0)
        printEvery = try a.int("print-every", min: 1)
        log = a.string("log")
        resume = a.has("resume")
        force = a.has("force")
        quiet = a.has("quiet")
        skipUnknown = finetune && a.has("skip-unknown")
        if !finetune && !["char", "bpe"].contains(tokenizerChoice) && !FileManager.default.fileExists(atPath: tokenizerChoice) {
            throw GenError.usage("The value '\(tokenizerChoice)' is invalid for '--tokenizer <kind>': char, bpe, or an existing tokenizer.json")
        }
        if from == nil && !finetune { try config.validate() }
    }

    func run() throws -> Int32 {
        let outputs = try RunOutputs(out: out, log: log, inputs: corpus + [from, tokenizerChoice].compactMap { $0 },
                                     replace: force, resume: resume, adapterFolder: lora != nil)
        let files = try CorpusFiles(corpus, folder: outputs.folder)
        do {
            return try withExtendedLifetime(outputs) { try train(files.paths, folder: outputs.folder) }
        } catch {
            throw files.named(error)
        }
    }

    func train(_ paths: [String], folder: String) throws -> Int32 {
        let (model, tokenizer, metadata) = try startingModel(paths)
        var skipped = 0
        let data = try TokenData(encoding: paths, with: tokenizer, cacheDirectory: folder,
                                 skipUnknown: skipUnknown, skipped: &skipped, threads: options.threads)
        if skipped > 0 && !quiet { note("skipped \(skipped) characters the model does not know") }
        let nTrain = try trainingSplit(data, context: model.config.blockSize)
        try Machine.checkTrainingFits(model.config, settings, adapters: model.adapters)
        let policy = CheckpointPolicy(path: out, every: saveEvery, tokenizer: tokenizer, metadata: metadata,
                                      baseModel: lora == nil ? nil : from)
        let training = TrainingRun(model: model, settings: settings, data: data, trainTokens: nTrain, options: options, checkpoint: policy)
        if resume { try training.resume(modelMetadata: metadata) }
        let reporter = try TrainReporter(quiet: quiet, printEvery: printEvery, logPath: log)
        if !quiet {
            let c = model.config
            let what = resume ? "resuming \(out) at step \(training.trainer.step)" : from.map { "finetuning \($0)" } ?? "training"
            note("\(what): \(c.nLayer) layers, \(c.nHead) heads, \(c.nEmbd) channels, context \(c.blockSize), vocab \(c.vocabSize), \(formatCount(model.parameterCount)) parameters; \(formatCount(nTrain)) training tokens, \(formatCount(data.count - nTrain)) validation; \(options.threads) threads, matrix products \(Machine.matrixProducts)")
        }
        return try runToEnd(training, reporter: reporter, out: out, quiet: quiet, lossLabel: "train loss")
    }

    /// The model to train, its tokenizer and the metadata its checkpoints carry: the saved run
    /// (--resume), the model to finetune (--from), or a new one.
    func startingModel(_ paths: [String]) throws -> (GPTModel, Tokenizer, [String: String]) {
        var meta = ["corpus": corpus.map { $0 == "-" ? "<stdin>" : Paths.fileName(of: $0) }.joined(separator: " "),
                    "generator": "gen \(genVersion)"]
        if let lora, let from {
            // Adapters on a frozen base: new ones, or those of the run being resumed.
            let ck = try Checkpoint.load(from)
            if resume {
                ck.model.adapters = try LoRAAdapters.load(folder: out, model: ck.model.config)
                meta = (try SafeTensorsFile(path: out + "/adapter_model.safetensors")).metadata
            } else {
                let adapters = try LoRAAdapters(config: lora, model: ck.model.config)
                adapters.initialize(seed: options.seed)
                ck.model.adapters = adapters
            }
            return (ck.model, ck.tokenizer, meta)
        }
        if resume || from != nil {
            let ck = try Checkpoint.load(resume ? out : from!)
            meta = ck.metadata.merging(meta) { _, new in new }
            if !resume { meta["finetuned_from"] = Paths.fileName(of: from!); meta["val_loss"] = nil }
            return (ck.model, ck.tokenizer, meta)
        }
        let tokenizer: Tokenizer
        switch tokenizerChoice {
        case "char":
            tokenizer = try charVocabulary(of: paths)
        case "bpe":
            if !quiet { note("learning a BPE tokenizer of \(vocabSize) tokens") }
            tokenizer = try BPETrainer.train(paths: paths, vocabSize: vocabSize, pattern: pattern, special: ["<|endoftext|>"])
        default:
            tokenizer = try loadTokenizer(tokenizerChoice)
        }
        var c = config
        c.vocabSize = tokenizer.vocabSize
        try Machine.checkTrainingFits(c, settings)
        let model = GPTModel(config: c)
        model.initialize(seed: options.seed)
        return (model, tokenizer, meta)
    }

    /// Tokens that train (the rest validate), checked against the context.
    func trainingSplit(_ data: TokenData, context T: Int) throws -> Int {
        let nTrain = valFraction > 0 ? Int(Double(data.count) * Double(1 - valFraction)) : data.count
        let nVal = data.count - nTrain
        guard nTrain > T else {
            throw GenError("the corpus gives \(data.count) tokens, \(nTrain) for training; a context of \(T) needs at least \(T + 1) (use a longer corpus or a smaller --context)")
        }
        if valFraction > 0 && nVal <= T {
            throw GenError("the validation split has \(nVal) tokens, fewer than the context + 1 (\(T + 1)); raise --val-fraction, or pass --val-fraction 0")
        }
        return nTrain
    }
}
