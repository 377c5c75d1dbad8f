import FoundationEssentials
import Glibc
import GenKit

/// `gen prefer`: Direct Preference Optimization on pairs that `gen review` (or anything writing
/// TRL's preference format) collected. A `TrainingRun` with `DirectPreferenceLoss` over
/// `PreferenceBatches`; the reference is the starting model, whose log-probabilities are
/// computed once before the first step.
struct PreferOptions {
    static let spec = CommandSpec(
        name: "prefer",
        abstract: "Tune a model towards preferred completions (DPO).",
        discussion: """
        PAIRS is JSON lines {"prompt", "chosen", "rejected"} (what gen review writes; TRL's preference \
        format). Each pair's loss is -log sigmoid(beta * ((log p(chosen) - log ref(chosen)) - (log p(rejected) - \
        log ref(rejected)))), log-probabilities summed over the completion's tokens; the reference is the \
        model as it starts (--from, with --adapter when given). Completions end with <|endoftext|> when the \
        vocabulary has it. A pair longer than the context loses the start of its prompt (one token is kept), \
        then the end of its completions, as TRL truncates. The last --val-fraction of the pairs validates. \
        --batch counts pairs. Progress and --log report TRL's figures: loss, rewards/chosen, \
        rewards/rejected, rewards/accuracies, rewards/margins (reward = beta * (log p - log ref)).
        """,
        arguments: [ArgumentSpec(name: "pairs", help: "The preference pairs (JSON lines); '-' reads standard input.")],
        options: [fromOption, adapterOption,
                  OptionSpec(name: "beta", value: "x", help: "How far the model may move from the reference (DPO's beta).", defaultValue: "0.1")]
            + TrainOptions.runOptions.compactMap { o in
                var o = o
                switch o.name {
                case "out": o.defaultValue = "<from>-dpo.safetensors, or <from>-dpo-lora with --lora/--adapter"
                case "batch": o.defaultValue = "4"; o.help = "Preference pairs per micro-batch."
                case "steps": o.defaultValue = "100"
                case "lr": o.defaultValue = "1e-5"
                case "min-lr": o.defaultValue = "1e-6"
                case "warmup": o.defaultValue = "10"
                case "weight-decay": o.defaultValue = "0"
                case "eval-every": o.defaultValue = "50"
                case "val-fraction": o.help = "Share of the pairs (the last ones) kept for validation."
                case "eval-batches": o.hidden = true   // validation covers every held-out pair
                default: break
                }
                return o
            }
            + [OptionSpec(name: "lora", value: "r", help: "Train new LoRA adapters of this rank instead of every weight; --out is then a PEFT adapter folder."),
               OptionSpec(name: "lora-alpha", value: "a", help: "LoRA scaling numerator (default: 2·r)."),
               OptionSpec(name: "lora-dropout", value: "p", help: "Dropout on the adapters' inputs.", defaultValue: "0"),
               OptionSpec(name: "lora-targets", value: "list", help: "Projections to adapt, comma-separated.", defaultValue: "c_attn,attn.c_proj,c_fc,mlp.c_proj")]
            + TrainOptions.shapeOptions.map { o in var o = o; o.hidden = true; return o })

    var pairsPath: String
    var from: String
    var adapter: String?
    var beta: Float
    var train: TrainOptions

    init(_ a: ParsedArguments) throws {
        pairsPath = a.positionals[0]
        from = a.string("from")!
        adapter = a.string("adapter")
        beta = try a.float("beta", min: 0)
        guard beta > 0 else { throw GenError.usage("--beta must be more than 0", setting: "beta") }
        if adapter != nil && a.has("lora") { throw GenError.usage("--adapter trains the adapters given; --lora makes new ones: use one of them") }
        train = try TrainOptions(a, finetune: true)
        if !a.has("out") { train.out = outputBeside(from, suffix: train.lora == nil && adapter == nil ? "-dpo.safetensors" : "-dpo-lora") }
    }

    var adapterRun: Bool { train.lora != nil || adapter != nil }

    func run() throws -> Int32 {
        let outputs = try RunOutputs(out: train.out, log: train.log, inputs: [pairsPath, from] + (adapter.map { [$0] } ?? []),
                                     replace: train.force, resume: train.resume, adapterFolder: adapterRun)
        let files = try CorpusFiles([pairsPath], folder: outputs.folder)
        do {
            return try withExtendedLifetime(outputs) { try prefer(files.paths[0]) }
        } catch {
            throw files.named(error)
        }
    }

    func prefer(_ path: String) throws -> Int32 {
        let quiet = train.quiet
        // The reference: the model as the run starts, before any step (also when resuming).
        let start = try loadModel(from, adapter: adapter)
        let config = start.model.config
        let name = pairsPath == "-" ? "standard input" : pairsPath
        let text = String(decoding: try Corpus.mapValidated(path, name: name), as: UTF8.self)
        let data = try PreferenceData(jsonLines: text, name: name,
                                      tokenizer: start.tokenizer, context: config.blockSize)
        let n = data.pairs.count
        let nVal = train.valFraction > 0 ? Int((Double(n) * Double(train.valFraction)).rounded()) : 0
        guard n - nVal >= 1 else { throw GenError("\(pairsPath) holds \(n) pairs: too few to keep \(nVal) for validation (lower --val-fraction)") }
        let P = train.settings.batchSize
        var settings = train.settings
        settings.batchSize = P <= Int.max / 2 ? 2 * P : Int.max   // too large either way: the memory check says so
        let T = max(1, data.length)
        if !quiet && data.truncated > 0 { note("\(data.truncated) of \(n) pairs are longer than the context of \(config.blockSize) and were truncated") }
        var adapters = start.model.adapters
        if let lora = train.lora { adapters = try LoRAAdapters(config: lora, model: config) }
        try Machine.checkTrainingFits(config, settings, adapters: adapters)

        if !quiet { note("computing the reference log-probabilities of \(n) pairs") }
        let reference = try DirectPreferenceLoss.referenceLogProbs(model: start.model, pairs: data.pairs, context: T,
                                                                   pairsPerBatch: P, threads: train.options.threads)
        // The model that trains: the start itself, or the run saved in --out.
        var model = start.model
        var metadata = start.metadata.merging(["preference_pairs": Paths.fileName(of: pairsPath), "generator": "gen \(genVersion)"]) { _, new in new }
        metadata["val_loss"] = nil
        if train.resume {
            if adapterRun {
                model.adapters = try LoRAAdapters.load(folder: train.out, model: config)
                metadata = (try SafeTensorsFile(path: train.out + "/adapter_model.safetensors")).metadata
            } else {
                let ck = try Checkpoint.load(train.out)
                model = ck.model
                metadata = ck.metadata
            }
        } else if train.lora != nil, let adapters {
            adapters.initialize(seed: train.options.seed)
            model.adapters = adapters
        }

        let objective = DirectPreferenceLoss(beta: beta, reference: reference, B: 2 * P, T: T)
        let trainer = Trainer(model: model, settings: settings, context: T, seed: train.options.seed, objective: objective)
        let trainIndices = Array(0..<(n - nVal)), valIndices = Array((n - nVal)..<n)
        let source = PreferenceBatches(data.pairs, indices: trainIndices, seed: train.options.seed &+ 1)
        var options = train.options
        options.evalBatches = max(1, (nVal + P - 1) / P)
        let validation: ((Int) -> BatchSource)? = nVal > 0 ? { _ in PreferenceBatches(data.pairs, indices: valIndices, seed: nil) } : nil
        let policy = CheckpointPolicy(path: train.out, every: train.saveEvery, tokenizer: start.tokenizer, metadata: metadata,
                                      baseModel: adapterRun ? from : nil)
        let run = TrainingRun(trainer: trainer, source: source, validation: validation, options: options, checkpoint: policy)
        if train.resume { try run.resume(modelMetadata: metadata) }
        let reporter = try TrainReporter(quiet: quiet, printEvery: train.printEvery, logPath: train.log)
        reporter.metrics = { objective.take(validation: $0).values }
        if !quiet {
            let what = train.resume ? "resuming \(train.out) at step \(trainer.step)" : "preference-tuning \(from)" + (adapterRun ? " (LoRA adapters)" : "")
            note("\(what): \(n - nVal) pairs train, \(nVal) validate; beta \(beta); \(P) pairs per batch, \(T) positions; \(train.options.threads) threads")
        }
        return try runToEnd(run, reporter: reporter, out: train.out, quiet: quiet, lossLabel: "loss")
    }
}
