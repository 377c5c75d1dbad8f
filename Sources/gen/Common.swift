import FoundationEssentials
import Glibc
import GenKit

let fromOption = OptionSpec(name: "from", short: "m", value: "model", help: "A gen model file, or a Hugging Face GPT-2 folder (or its .safetensors with config.json beside it).", required: true)
let adapterOption = OptionSpec(name: "adapter", value: "dir", help: "LoRA adapters (a PEFT adapter folder, by gen or PEFT) to apply on top of --from, without merging.")

let weightsOption = OptionSpec(name: "weights", value: "fp32|int8", help: "Precision of the weights: int8 rounds the projections and embeddings to 8 bits in blocks of 64 at load (decoding reads about a quarter of the bytes).", defaultValue: "fp32")

/// The model of --from, with the adapters of --adapter when given, its weights rounded to 8
/// bits when `weights` is "int8" (the adapters stay fp32). A model `forDecoding` only runs
/// forward (sampled from; evaluated, in 8 bits): its fp32 projections are stored for
/// streaming (`arrangeForDecoding`), or in 8 bits alone.
func loadModel(_ from: String, adapter: String?, weights: String = "fp32", forDecoding: Bool = false) throws -> Checkpoint {
    var options: LoadOptions = forDecoding ? .decoding : []
    if weights == "int8" { options.insert(.int8) }
    let ck = try Checkpoint.load(from, options)
    if let adapter { ck.model.adapters = try LoRAAdapters.load(folder: adapter, model: ck.model.config) }
    return ck
}

// Top-k and top-p, as `gen sample` and `gen review` take them.
let topKOption = OptionSpec(name: "top-k", value: "k", help: "Sample among the k most likely tokens only (0: all).", defaultValue: "0")
let topPOption = OptionSpec(name: "top-p", value: "p", help: "Sample among the most likely tokens whose probabilities reach p (with --top-k, among the k kept).", defaultValue: "1.0")

let threadsOption = OptionSpec(name: "threads", value: "n", help: "Threads to use (at most the cores online).", defaultValue: "\(Machine.cores)")

/// --threads, capped at the cores online: more threads than cores only wait for each other.
func threadCount(_ a: ParsedArguments) throws -> Int {
    let n = try a.int("threads", min: 1)
    if n > Machine.cores {
        note("note: --threads \(n) is more than the \(Machine.cores) cores online; using \(Machine.cores)")
        return Machine.cores
    }
    return n
}

/// Ctrl-C and SIGTERM (what `timeout`, job schedulers and container runtimes send) finish the
/// running step, save and exit 130. A second one ends gen at once, as the signal's default
/// would (for a step that takes too long; checkpoints are written by rename, so the last one
/// stays whole). `GEN_STOP_AFTER_STEP=N` does the same as the first after step N.
enum Interrupt {
    nonisolated(unsafe) static var requested: sig_atomic_t = 0
    static let stopAfter = ProcessInfo.processInfo.environment["GEN_STOP_AFTER_STEP"].flatMap(Int.init)

    /// Whether the first signal is acknowledged in silence (--quiet).
    nonisolated(unsafe) static var quiet = false

    static func install(quiet: Bool) {
        Self.quiet = quiet
        // A parent (a shell script, a test runner) may have started gen with the signals blocked.
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, SIGINT)
        sigaddset(&mask, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &mask, nil)
        signal(SIGINT) { Interrupt.received($0) }
        signal(SIGTERM) { Interrupt.received($0) }
    }

    /// The handler: only async-signal-safe calls (write, signal, raise).
    static func received(_ signal: Int32) {
        if requested != 0 {
            Glibc.signal(signal, SIG_DFL)
            raise(signal)
            return
        }
        requested = 1
        if quiet { return }
        let message: StaticString = "\nstopping after this step, then saving (again to stop at once)\n"
        _ = write(2, message.utf8Start, message.utf8CodeUnitCount)
    }

    static func shouldStop(afterStep step: Int) -> Bool { requested != 0 || step == stopAfter }
}

/// Turns a run's events into progress on stderr (one live line on a terminal, plain lines
/// otherwise) and JSON lines in --log.
final class TrainReporter: TrainingRunDelegate {
    let quiet: Bool, printEvery: Int
    let tty = isatty(2) != 0
    /// The --log file (opened for appending), or -1; -1 too after a write failed (said once).
    var log: Int32
    let logPath: String?
    let started = Date()
    var lastDraw = Date.distantPast
    var drawn = false
    /// Figures of the objective besides the loss (DPO's rewards), since the last call: for
    /// the training steps, or (true) for the validation just done. Logged, and the progress
    /// line shows rewards/accuracies and rewards/margins.
    var metrics: ((_ validation: Bool) -> [(String, Double)])?

    init(quiet: Bool, printEvery: Int, logPath: String?) throws {
        self.quiet = quiet
        self.printEvery = printEvery
        self.logPath = logPath
        if logPath == "-" {
            log = 1
        } else if let logPath {
            log = open(logPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard log >= 0 else { throw GenError("cannot open --log \(logPath) for appending") }
        } else {
            log = -1
        }
    }

    deinit { if log > 2 { close(log) } }

    var elapsed: Double { Date().timeIntervalSince(started) }

    /// Appends a line to the log. A write that fails (a full disk) is said once on stderr and
    /// ends the log, not the run: the model's checkpoints matter more than its log.
    func write(_ json: String) {
        guard log >= 0 else { return }
        if !writeAll(log, Array((json + "\n").utf8)) {
            let reason = String(cString: strerror(errno))
            finish()
            note("warning: cannot write --log \(logPath ?? ""): \(reason); the run goes on without its log")
            if log > 2 { close(log) }
            log = -1
        }
    }

    func trainingRun(_ run: TrainingRun, finished r: TrainingRun.StepReport) {
        let values = metrics?(false) ?? []
        write("{\"step\":\(r.step),\"loss\":\(r.loss),\"lr\":\(r.learningRate),\"tokens_per_s\":\(Int(r.tokensPerSecond)),\"ms\":\(cFormat("%.2f", r.milliseconds))"
              + values.map { ",\"\($0.0)\":\($0.1)" }.joined() + "}")
        if quiet { return }
        var v = run.lastValidationLoss.map { cFormat(" | val %.4f", $0) } ?? ""
        for (key, short) in [("rewards/accuracies", "acc"), ("rewards/margins", "margin")] {
            if let x = values.first(where: { $0.0 == key })?.1 { v += cFormat(" | \(short) %.3f", x) }
        }
        let line = "step \(r.step)/\(r.steps) | loss \(cFormat("%.4f", r.loss))\(v) | lr \(cFormat("%.2e", r.learningRate)) | "
            + "\(formatCount(Int(r.tokensPerSecond))) tok/s | \(formatDuration(r.elapsed)) elapsed | ETA \(formatDuration(r.remaining))"
        let validated = r.validationLoss != nil
        if tty {
            if validated || r.step == r.steps || Date().timeIntervalSince(lastDraw) > 0.1 {
                // The live line must fit the terminal: a wrapped line cannot be redrawn in place.
                fputs("\r\u{1B}[K" + String(line.prefix(max(20, terminalColumns() - 1))), stderr)
                if validated { fputs("\n", stderr) }
                drawn = !validated
                lastDraw = Date()
            }
        } else if r.step % printEvery == 0 || validated || r.step == r.steps {
            note(line)
        }
    }

    func trainingRun(_ run: TrainingRun, validated loss: Float, atStep step: Int) {
        let values = metrics?(true) ?? []
        write("{\"step\":\(step),\"val_loss\":\(loss)" + values.map { ",\"val_\($0.0)\":\($0.1)" }.joined() + "}")
    }

    func trainingRunShouldStop(_ run: TrainingRun) -> Bool { Interrupt.shouldStop(afterStep: run.trainer.step) }

    /// Ends a live line.
    func finish() {
        if !quiet && tty && drawn { fputs("\n", stderr); drawn = false }
    }
}

/// Runs `run` to its end with `reporter` as its delegate and Ctrl-C/SIGTERM caught, and says
/// how it ended. Returns the exit status: 0, or 130 when interrupted (the checkpoint in `out`
/// holds the last step). `lossLabel` names the loss in the closing line.
func runToEnd(_ run: TrainingRun, reporter: TrainReporter, out: String, quiet: Bool, lossLabel: String) throws -> Int32 {
    run.delegate = reporter
    Interrupt.install(quiet: quiet)
    let outcome = try withExtendedLifetime(reporter) {
        do { return try run.run() } catch { reporter.finish(); throw error }
    }
    reporter.finish()
    if case .stopped(let step) = outcome {
        if !quiet { note("interrupted: saved \(out) at step \(step); continue with --resume") }
        return 130
    }
    if !quiet {
        let v = run.lastValidationLoss.map { cFormat(", val loss %.4f", $0) } ?? ""
        note("saved \(out): step \(run.trainer.step), \(lossLabel) \(cFormat("%.4f", run.lastLoss))\(v), \(formatDuration(reporter.elapsed))")
    }
    return 0
}

/// The output a run writes beside the model it starts from: `gpt2/` or `m.safetensors` with
/// `suffix` (e.g. "-finetuned.safetensors") in place of the extension or trailing slash.
func outputBeside(_ from: String, suffix: String) -> String {
    var stem = from
    while stem.count > 1 && stem.hasSuffix("/") { stem.removeLast() }   // a Hugging Face folder given as gpt2/
    if stem.hasSuffix(".safetensors") { stem.removeLast(".safetensors".count) }
    return stem + suffix
}

/// Columns of the terminal on stderr (80 when it cannot tell).
func terminalColumns() -> Int {
    var size = winsize()
    if ioctl(2, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 { return Int(size.ws_col) }
    return 80
}

/// The tokenizer of a model file or a tokenizer.json (Hugging Face's or gen's own form).
func loadTokenizer(_ path: String) throws -> Tokenizer {
    var isDir = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw GenError("cannot read \(path): No such file or directory") }
    if isDir { return try HuggingFaceGPT2.tokenizer(in: path) }
    guard let head = readPrefix(of: path, count: 9) else { throw GenError("cannot read \(path)") }
    if head.count == 9 && head[8] == UInt8(ascii: "{") && head[0...7].contains(where: { $0 != 0 }) && head[7] == 0 {
        return try Checkpoint.load(path, .headerOnly).tokenizer
    }
    guard let data = FileManager.default.contents(atPath: path), let obj = try? JSON.parse(data), obj.object != nil else {
        throw GenError("\(path) is neither a gen model nor a tokenizer JSON file")
    }
    if let type = obj["type"]?.string, type == "char" || type == "bpe" {
        return try makeTokenizer(parsed: obj)
    }
    return try BPETokenizer.huggingFace(json: obj, path: path)
}

/// The first `count` bytes of a file (fewer when it is shorter), or nil when it cannot be read.
func readPrefix(of path: String, count: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out = [UInt8](repeating: 0, count: count)
    var got = 0
    while got < count {
        let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, count - got) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { return nil }
        if n == 0 { break }
        got += n
    }
    return Array(out.prefix(got))
}

/// Writes all of `bytes` to `fd` (retrying short writes); false on an error (a closed pipe: EPIPE).
@discardableResult
func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { b in
        var off = 0
        while off < b.count {
            let w = write(fd, b.baseAddress! + off, b.count - off)
            if w < 0 && errno == EINTR { continue }
            guard w > 0 else { return false }
            off += w
        }
        return true
    }
}

/// An error's text for a one-line message.
func describe(_ error: Error) -> String {
    if let e = error as? GenError { return e.message }
    if let e = error as? CocoaError, let path = e.filePath {
        if let u = e.underlying as? POSIXError { return "\(path): \(String(cString: strerror(u.code.rawValue)))" }
        return "\(path): \(e.code)"
    }
    return "\(error)"
}

/// The folder for temporary files: $TMPDIR, else /tmp.
func temporaryDirectory() -> String {
    if let t = ProcessInfo.processInfo.environment["TMPDIR"], !t.isEmpty { return t }
    return "/tmp"
}
