import Foundation
import GenKit

/// Set by SIGINT: training finishes its step, saves and exits 130.
nonisolated(unsafe) var interrupted: sig_atomic_t = 0

let trainingOptions: [OptionSpec] = [
    OptionSpec(name: "out", value: "file", help: "Where to write the model (and <file>.state).", defaultValue: "model.safetensors"),
    OptionSpec(name: "layers", value: "n", help: "Transformer blocks.", defaultValue: "4"),
    OptionSpec(name: "heads", value: "n", help: "Attention heads per block.", defaultValue: "4"),
    OptionSpec(name: "embd", value: "n", help: "Embedding width (a multiple of --heads).", defaultValue: "128"),
    OptionSpec(name: "context", value: "n", help: "Context length in tokens.", defaultValue: "64"),
    OptionSpec(name: "tokenizer", value: "kind", help: "char, bpe (trained on the corpus), or a tokenizer.json to reuse.", defaultValue: "char"),
    OptionSpec(name: "vocab-size", value: "n", help: "Vocabulary size with --tokenizer bpe.", defaultValue: "1024"),
    OptionSpec(name: "pattern", value: "name", help: "Pre-tokenization pattern with --tokenizer bpe: gpt2 or gpt4.", defaultValue: "gpt2"),
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
    OptionSpec(name: "seed", value: "n", help: "Seed for initialisation, batches and dropout.", defaultValue: "1337"),
    OptionSpec(name: "threads", value: "n", help: "Threads to use.", defaultValue: "\(Parallel.cores)"),
    OptionSpec(name: "log", value: "file", help: "Append one JSON object per step and per evaluation to this file.", defaultValue: nil),
    OptionSpec(name: "print-every", value: "n", help: "Steps between progress lines when stderr is not a terminal.", defaultValue: "50"),
    OptionSpec(name: "resume", value: nil, help: "Continue the run saved in --out and its .state file.", defaultValue: nil),
    OptionSpec(name: "force", value: nil, help: "Replace an existing --out file instead of refusing.", defaultValue: nil),
    OptionSpec(name: "quiet", value: nil, help: "Print no progress.", defaultValue: nil),
]

let shapeOptions: Set<String> = ["layers", "heads", "embd", "context", "tokenizer", "vocab-size", "pattern"]

let trainSpec = CommandSpec(
    name: "train",
    abstract: "Train a GPT-2 model on text.",
    discussion: """
    With --tokenizer char the vocabulary is every character (Unicode scalar) of the corpus; with \
    --tokenizer bpe a byte-level BPE of --vocab-size tokens is first learned from it. The first (1 - val-fraction) \
    of the text trains, the rest validates. Progress goes to stderr; Ctrl-C finishes the step, \
    saves and exits 130.
    """,
    arguments: [("corpus", "Text files (UTF-8) to train on, concatenated; '-' reads standard input.", false, true)],
    options: trainingOptions)

let finetuneSpec = CommandSpec(
    name: "finetune",
    abstract: "Continue training a model on new text, with fresh optimizer state.",
    discussion: "The tokenizer and shape come from --from, which is never modified.",
    arguments: [("corpus", "Text files (UTF-8) to train on; '-' reads standard input.", false, true)],
    options: [OptionSpec(name: "from", value: "file", help: "The model to start from.", defaultValue: nil)]
        + trainingOptions.map { o in
            var o = o
            switch o.name {
            case "out": o.defaultValue = "<from>-finetuned.safetensors"
            case "steps": o.defaultValue = "500"
            case "lr": o.defaultValue = "3e-4"
            case "min-lr": o.defaultValue = "3e-5"
            case "warmup": o.defaultValue = "20"
            case "eval-every": o.defaultValue = "100"
            case "layers", "heads", "embd", "context", "tokenizer", "vocab-size", "pattern": o.hidden = true
            default: break
            }
            return o
        } + [OptionSpec(name: "skip-unknown", value: nil, help: "Drop characters the model does not know (and say how many) instead of refusing.", defaultValue: nil)])

func runTrain(_ args: [String], finetune: Bool) throws -> Int32 {
    let a = try ParsedArguments(args, spec: finetune ? finetuneSpec : trainSpec)
    if finetune {
        for name in shapeOptions where a.has(name) {
            throw UsageError(message: "finetune takes the model's shape from --from; '--\(name)' cannot be changed", command: a.spec)
        }
        guard a.has("from") else { throw UsageError(message: "Missing expected argument '--from <file>'", command: a.spec) }
    }
    guard !a.positionals.isEmpty else { throw UsageError(message: "Missing expected argument '<corpus> ...'", command: a.spec) }

    var s = TrainingSettings()
    s.batchSize = try a.int("batch", min: 1)
    s.accumulation = try a.int("accum", min: 1)
    s.steps = try a.int("steps", min: 1)
    s.learningRate = try a.float("lr", min: 0)
    s.minLearningRate = try a.float("min-lr", min: 0)
    s.warmup = try a.int("warmup", min: 0)
    s.weightDecay = try a.float("weight-decay", min: 0)
    s.beta1 = try a.float("beta1", min: 0, max: 0.999999)
    s.beta2 = try a.float("beta2", min: 0, max: 0.999999)
    s.gradClip = try a.float("grad-clip", min: 0)
    s.dropout = try a.float("dropout", min: 0, max: 0.95)
    let valFraction = try a.float("val-fraction", min: 0, max: 0.5)
    let evalEvery = try a.int("eval-every", min: 0)
    let evalBatches = try a.int("eval-batches", min: 1)
    let saveEvery = try a.int("save-every", min: 0)
    let printEvery = try a.int("print-every", min: 1)
    let seedInt = try a.int("seed", min: 0)
    let seed = UInt64(seedInt)
    let threads = try a.int("threads", min: 1)
    let quiet = a.has("quiet")
    let resume = a.has("resume")

    let fromPath = a.string("from")
    var out = a.string("out")!
    if finetune && !a.values.keys.contains("out") {
        let from = fromPath!
        let stem = from.hasSuffix(".safetensors") ? String(from.dropLast(".safetensors".count)) : from
        out = stem + "-finetuned.safetensors"
    }
    let statePath = out + ".state"
    if let fromPath, URL(fileURLWithPath: fromPath).standardizedFileURL.path == URL(fileURLWithPath: out).standardizedFileURL.path {
        throw GenError("--out names the --from model (\(out)); finetune never modifies --from: choose another --out")
    }
    let fm = FileManager.default
    if resume {
        guard fm.fileExists(atPath: out) else { throw GenError("cannot resume: \(out) does not exist") }
        guard fm.fileExists(atPath: statePath) else { throw GenError("cannot resume: \(statePath) does not exist (the run saved no optimizer state)") }
    } else if fm.fileExists(atPath: out) && !a.has("force") {
        throw GenError("\(out) already exists; pass --resume to continue its training, --force to replace it, or choose another --out")
    }
    let outDir = (out as NSString).deletingLastPathComponent.isEmpty ? "." : (out as NSString).deletingLastPathComponent
    var isDir = ObjCBool(false)
    guard fm.fileExists(atPath: outDir, isDirectory: &isDir), isDir.boolValue else {
        throw GenError("cannot write \(out): the folder \(outDir) does not exist")
    }
    guard access(outDir, W_OK) == 0 else { throw GenError("cannot write \(out): the folder \(outDir) is not writable") }

    Parallel.threads = threads
    BLAS.setThreads(threads)

    // Corpus: standard input is spooled to a file so it can be read twice.
    var spooled: String?
    defer { if let spooled { unlink(spooled) } }
    var paths: [String] = []
    for p in a.positionals {
        if p == "-" {
            if spooled == nil { spooled = try Corpus.spoolStandardInput(into: outDir) }
            paths.append(spooled!)
        } else {
            paths.append(p)
        }
    }
    let corpusName = a.positionals.map { $0 == "-" ? "<stdin>" : ($0 as NSString).lastPathComponent }.joined(separator: " ")

    // Tokenizer and model.
    let model: GPTModel
    let tokenizer: Tokenizer
    var baseMetadata: [String: String] = [:]
    if resume {
        let ck = try Checkpoint.load(out)
        model = ck.model
        tokenizer = ck.tokenizer
        baseMetadata = ck.metadata
    } else if let fromPath {
        let ck = try Checkpoint.load(fromPath)
        model = ck.model
        tokenizer = ck.tokenizer
        baseMetadata = ck.metadata
        baseMetadata["finetuned_from"] = (fromPath as NSString).lastPathComponent
    } else {
        let config = GPTConfig(nLayer: try a.int("layers", min: 1), nHead: try a.int("heads", min: 1),
                               nEmbd: try a.int("embd", min: 1), blockSize: try a.int("context", min: 1), vocabSize: 1)
        if config.nEmbd % config.nHead != 0 {
            throw UsageError(message: "--embd (\(config.nEmbd)) must be a multiple of --heads (\(config.nHead))", command: a.spec)
        }
        switch a.string("tokenizer")! {
        case "char":
            tokenizer = try charVocabulary(of: paths)
        case "bpe":
            guard let pattern = SplitPattern(rawValue: a.string("pattern")!) else {
                throw UsageError(message: "The value '\(a.string("pattern")!)' is invalid for '--pattern <name>': gpt2 or gpt4", command: a.spec)
            }
            let size = try a.int("vocab-size", min: 257)
            if !quiet { fputs("learning a BPE tokenizer of \(size) tokens\n", stderr) }
            tokenizer = try BPETrainer.train(paths: paths, vocabSize: size, pattern: pattern)
        default:
            tokenizer = try loadTokenizer(a.string("tokenizer")!)
        }
        var c = config
        c.vocabSize = tokenizer.vocabSize
        if let p = c.problem { throw GenError(p) }
        try checkMemory(c, s)
        model = GPTModel(config: c)
        model.initialize(seed: seed)
    }
    let config = model.config
    let T = config.blockSize

    var skipped = 0
    let data = try TokenData(encoding: paths, with: tokenizer, cacheDirectory: outDir,
                             skipUnknown: finetune && a.has("skip-unknown"), skipped: &skipped)
    if skipped > 0 && !quiet { fputs("skipped \(skipped) characters the model does not know\n", stderr) }
    let nTrain = valFraction > 0 ? Int(Double(data.count) * Double(1 - valFraction)) : data.count
    let nVal = data.count - nTrain
    guard nTrain > T else {
        throw GenError("the corpus gives \(data.count) tokens, \(nTrain) for training; a context of \(T) needs at least \(T + 1) (use a longer corpus or a smaller --context)")
    }
    let validate = valFraction > 0
    if validate && nVal <= T {
        throw GenError("the validation split has \(nVal) tokens, fewer than the context + 1 (\(T + 1)); raise --val-fraction, or pass --val-fraction 0")
    }

    try checkMemory(config, s)
    let trainer = Trainer(model: model, settings: s, seed: seed)
    var dataRandom = Random(seed: seed &+ 1)
    if resume {
        let state = try TrainingState.load(statePath, into: trainer)
        trainer.step = state.step
        dataRandom = state.dataRandom
        trainer.dropoutRandom = state.dropoutRandom
        if state.settings.batchSize != s.batchSize {
            throw GenError("--batch \(s.batchSize) differs from the saved run's \(state.settings.batchSize)")
        }
        if trainer.step >= s.steps {
            throw GenError("\(out) has already done \(trainer.step) steps; pass a larger --steps to train further")
        }
    }

    func fillBatch(_ x: UnsafeMutablePointer<Int32>, _ y: UnsafeMutablePointer<Int32>, from lo: Int, count: Int, rng: inout Random, B: Int) {
        for b in 0..<B {
            let start = lo + rng.nextInt(below: count - T)
            for t in 0..<T {
                x[b * T + t] = data[start + t]
                y[b * T + t] = data[start + t + 1]
            }
        }
    }

    func validationLoss() -> Float {
        var rng = Random(seed: seed ^ 0xE7A1 ^ UInt64(trainer.step))
        var sum: Double = 0
        for _ in 0..<evalBatches {
            fillBatch(trainer.inputs.pointer, trainer.targets.pointer, from: nTrain, count: nVal, rng: &rng, B: s.batchSize)
            sum += Double(GPT.forward(model.views, config, trainer.activations, tokens: trainer.inputs.pointer,
                                      targets: trainer.targets.pointer, B: s.batchSize, t: T))
        }
        return Float(sum / Double(evalBatches))
    }

    var logFile: UnsafeMutablePointer<FILE>?
    if let logPath = a.string("log") {
        guard let f = fopen(logPath, "a") else { throw GenError("cannot open --log \(logPath): \(String(cString: strerror(errno)))") }
        logFile = f
    }
    defer { if let logFile { fclose(logFile) } }
    func log(_ json: String) {
        guard let logFile else { return }
        fputs(json + "\n", logFile)
        fflush(logFile)
    }

    var lastLoss: Float = .nan
    // A resumed run carries its last validation loss; a new or finetuning run starts without.
    var lastVal: Float? = resume ? baseMetadata["val_loss"].flatMap(Float.init) : nil
    func save() throws {
        var meta = baseMetadata
        for k in ["format", "format_version", "config", "tokenizer"] { meta[k] = nil }
        meta["step"] = String(trainer.step)
        meta["train_loss"] = lastLoss.isFinite ? String(lastLoss) : nil
        meta["val_loss"] = lastVal.map { String($0) }
        meta["corpus"] = corpusName
        meta["date"] = ISO8601DateFormatter().string(from: Date())
        meta["seed"] = String(seed)
        meta["generator"] = "gen \(genVersion)"
        try Checkpoint(model: model, tokenizer: tokenizer, metadata: meta).save(out)
        let state = TrainingState(step: trainer.step, dataRandom: dataRandom, dropoutRandom: trainer.dropoutRandom,
                                  settings: s, extra: ["seed": String(seed), "threads": String(threads)])
        try TrainingState.save(state, trainer: trainer, to: statePath)
    }

    // A parent (a shell script, a test runner) may have started gen with SIGINT blocked.
    var mask = sigset_t()
    sigemptyset(&mask)
    sigaddset(&mask, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &mask, nil)
    signal(SIGINT) { _ in interrupted = 1 }
    let progress = Progress(quiet: quiet, total: s.steps, printEvery: printEvery)
    if !quiet {
        let what = resume ? "resuming \(out) at step \(trainer.step)" : finetune ? "finetuning \(fromPath!)" : "training"
        fputs("\(what): \(config.nLayer) layers, \(config.nHead) heads, \(config.nEmbd) channels, context \(T), vocab \(config.vocabSize), \(formatCount(model.parameterCount)) parameters; \(formatCount(nTrain)) training tokens, \(formatCount(nVal)) validation; \(threads) threads, OpenBLAS \(BLAS.coreName)\n", stderr)
    }
    // GEN_STOP_AFTER_STEP=N acts as a Ctrl-C after step N (used by the resume test).
    let stopAfter = ProcessInfo.processInfo.environment["GEN_STOP_AFTER_STEP"].flatMap(Int.init)
    let tokensPerStep = s.batchSize * T * s.accumulation
    let startStep = trainer.step
    let started = Date()
    var lastSavedStep = resume ? trainer.step : -1
    while trainer.step < s.steps {
        let t0 = Date()
        let r = trainer.step { x, y in
            fillBatch(x, y, from: 0, count: nTrain, rng: &dataRandom, B: s.batchSize)
        }
        let ms = Date().timeIntervalSince(t0) * 1000
        guard r.loss.isFinite, r.gradNorm.isFinite else {
            progress.finish()
            let kept = lastSavedStep >= 0 ? "the last good checkpoint (step \(lastSavedStep)) is kept in \(out)" : "no checkpoint was written"
            throw GenError("the loss became \(r.loss.isNaN || r.gradNorm.isNaN ? "NaN" : "infinite") at step \(trainer.step); \(kept); try a lower --lr")
        }
        lastLoss = r.loss
        let step = trainer.step
        if step == stopAfter { interrupted = 1 }
        let tps = Double(tokensPerStep) / (ms / 1000)
        log("{\"step\":\(step),\"loss\":\(r.loss),\"lr\":\(r.learningRate),\"tokens_per_s\":\(Int(tps)),\"ms\":\(String(format: "%.2f", ms))}")
        var valText: Float?
        if validate && ((evalEvery > 0 && step % evalEvery == 0) || step == s.steps) {
            let v = validationLoss()
            lastVal = v
            valText = v
            log("{\"step\":\(step),\"val_loss\":\(v)}")
        }
        let elapsed = Date().timeIntervalSince(started)
        let rate = elapsed / Double(step - startStep)
        progress.update(step: step, loss: r.loss, val: valText, lastVal: lastVal, lr: r.learningRate,
                        tokensPerSecond: Double(tokensPerStep) / rate, elapsed: elapsed, eta: rate * Double(s.steps - step))
        if step == s.steps || (saveEvery > 0 && step % saveEvery == 0) || interrupted != 0 {
            try save()
            lastSavedStep = step
        }
        if interrupted != 0 {
            progress.finish()
            if !quiet { fputs("interrupted: saved \(out) at step \(step); continue with --resume\n", stderr) }
            return 130
        }
    }
    progress.finish()
    if !quiet {
        let v = lastVal.map { String(format: ", val loss %.4f", $0) } ?? ""
        fputs("saved \(out): step \(trainer.step), train loss \(String(format: "%.4f", lastLoss))\(v), \(formatDuration(Date().timeIntervalSince(started)))\n", stderr)
    }
    return 0
}

/// Refuses a run that cannot fit in memory, rather than be killed for it later.
func checkMemory(_ config: GPTConfig, _ s: TrainingSettings) throws {
    let need = 4 * 4 * ParameterLayout(config).count
        + Activations.bytes(config: config, B: s.batchSize, T: config.blockSize, training: true, dropout: s.dropout > 0)
    let have = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
    if need > have * 8 / 10 {
        throw GenError(String(format: "this run needs %.1f GB of memory (weights, gradients, AdamW state and activations) but the machine has %.1f GB; use a smaller --batch, --context or model", Double(need) / 1e9, Double(have) / 1e9))
    }
}

/// Progress on stderr: one live line on a terminal, plain lines otherwise.
final class Progress {
    let quiet: Bool, total: Int, printEvery: Int
    let tty = isatty(2) != 0
    var lastDraw = Date.distantPast
    var drawn = false

    init(quiet: Bool, total: Int, printEvery: Int) {
        self.quiet = quiet
        self.total = total
        self.printEvery = printEvery
    }

    func update(step: Int, loss: Float, val: Float?, lastVal: Float?, lr: Float, tokensPerSecond: Double, elapsed: Double, eta: Double) {
        if quiet { return }
        let v = lastVal.map { String(format: " | val %.4f", $0) } ?? ""
        let line = "step \(step)/\(total) | loss \(String(format: "%.4f", loss))\(v) | lr \(String(format: "%.2e", lr)) | "
            + "\(formatCount(Int(tokensPerSecond))) tok/s | \(formatDuration(elapsed)) elapsed | ETA \(formatDuration(eta))"
        if tty {
            if val != nil || step == total || Date().timeIntervalSince(lastDraw) > 0.1 {
                fputs("\r\u{1B}[K" + line, stderr)
                if val != nil { fputs("\n", stderr) }
                drawn = val == nil
                lastDraw = Date()
            }
        } else if step % printEvery == 0 || val != nil || step == total {
            fputs(line + "\n", stderr)
        }
    }

    func finish() {
        if !quiet && tty && drawn { fputs("\n", stderr); drawn = false }
    }
}

func formatCount(_ n: Int) -> String {
    if n >= 10_000_000 { return String(format: "%.1fM", Double(n) / 1e6) }
    if n >= 10_000 { return String(format: "%.1fk", Double(n) / 1e3) }
    return String(n)
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) }
    return String(format: "%d:%02d", t / 60, t % 60)
}
