import FoundationEssentials
import Glibc
import GenKit

/// `gen review`: two samples per prompt, judged by a person at the terminal or by a program
/// (--judge); each preference is one JSON line {"prompt", "chosen", "rejected"} in --out.
struct ReviewOptions {
    static let spec = CommandSpec(
        name: "review",
        abstract: "Rate pairs of samples; write the preferences for gen prefer.",
        discussion: """
        Prompts are the lines of the PROMPTS files ('-' or no file: standard input), blank lines skipped. For \
        each, gen samples two completions and shows them labelled 1 and 2; press 1 or 2 for the better one, = \
        for a tie, s to skip, q to quit. Each preference appends {"prompt", "chosen", "rejected"} (the \
        completions without the prompt, TRL's preference format) to --out; ties and skips go to \
        <out>.skipped, so that running again with the same --out continues after the prompts already \
        judged (delete <out>.skipped to see those again). With --judge CMD a program judges instead: for \
        each prompt gen runs CMD with /bin/sh, writes {"prompt": ..., "completions": [first, second]} to \
        its standard input and reads 1, 2, = or s from the first line of its output. The samples of \
        prompt i depend only on --seed and i, so a rerun shows the same pairs.
        """,
        arguments: [ArgumentSpec(name: "prompts", help: "Files of prompts, one per line; '-' reads standard input.", repeated: true, optional: true)],
        options: [
            fromOption,
            adapterOption,
            weightsOption,
            OptionSpec(name: "out", short: "o", value: "file", help: "Where the preferences go (appended).", defaultValue: "prefs.jsonl"),
            OptionSpec(name: "judge", value: "cmd", help: "A command that judges instead of a person (see above)."),
            OptionSpec(name: "max-tokens", short: "n", value: "n", help: "Tokens per completion.", defaultValue: "100"),
            OptionSpec(name: "temperature", aliases: ["temp"], value: "t", help: "Sampling temperature (above 0: two samples at 0 are the same).", defaultValue: "1.0"),
            topKOption,
            topPOption,
            OptionSpec(name: "stop", value: "text", help: "End a completion before this text (repeatable).", repeated: true),
            OptionSpec(name: "seed", short: "s", value: "n", help: "Seed of the samples.", defaultValue: "1337"),
            threadsOption,
            OptionSpec(name: "ignore-eos", value: nil, help: "Keep going past <|endoftext|>."),
            OptionSpec(name: "quiet", value: nil, help: "With --judge: print no progress."),
        ])

    var from: String
    var adapter: String?
    var weights: String
    var promptFiles: [String]
    var out: String
    var judge: String?
    var parameters = SamplingParameters()
    var maxTokens: Int
    var stops: [String]
    var seed: UInt64
    var threads: Int
    var ignoreEOS: Bool
    var quiet: Bool

    init(_ a: ParsedArguments) throws {
        from = a.string("from")!
        adapter = a.string("adapter")
        weights = try a.choice("weights", ["fp32", "int8"])
        promptFiles = a.positionals
        out = a.string("out")!
        judge = a.string("judge")
        parameters.temperature = try a.float("temperature", min: 0)
        guard parameters.temperature > 0 else {
            throw GenError.usage("at temperature 0 both samples would be the same; give a temperature above 0", setting: "temperature")
        }
        parameters.topK = try a.int("top-k", min: 0)
        parameters.topP = try a.float("top-p", min: 0, max: 1)
        maxTokens = try a.int("max-tokens", min: 1)
        stops = a.strings("stop")
        seed = UInt64(try a.int("seed", min: 0))
        threads = try threadCount(a)
        ignoreEOS = a.has("ignore-eos")
        quiet = a.has("quiet")
    }

    var skippedPath: String { out + ".skipped" }

    func run() throws -> Int32 {
        if isFolder(out) { throw GenError("--out \(out) is a folder") }
        try refuseInputAsOutput(out, written: [out, skippedPath], inputs: promptFiles + [from])
        let lock = try OutputLock(out)   // two reviews of one --out would judge the same prompts
        defer { withExtendedLifetime(lock) {} }
        signal(SIGPIPE, SIG_IGN)   // a judge that exits without reading its input
        let prompts = try readPrompts()
        var done = try judgedPrompts()
        let terminal = judge == nil ? try Terminal() : nil
        let ck = try loadModel(from, adapter: adapter, weights: weights, forDecoding: true)
        let generator = try Generator(model: ck.model, tokenizer: ck.tokenizer, parameters: parameters, seed: seed, threads: threads)
        // Each line already in --out or beside it stands for one occurrence of its prompt; the
        // prompts left are encoded (nil: judged already), and OpenBLAS is loaded only when one
        // of them needs it, as `gen sample` loads it.
        let encoded: [[Int32]?] = try prompts.enumerated().map { i, prompt in
            if let n = done[prompt], n > 0 { done[prompt] = n - 1; return nil }
            do { return try ck.tokenizer.encode(prompt) } catch let e as GenError {
                throw GenError("prompt \(i + 1) of \(prompts.count): \(e.message)")
            }
        }
        if encoded.contains(where: { $0.map { generator.multipliesMatrices(promptTokens: $0.count, maxTokens: maxTokens) } ?? false }) {
            try loadMatrixKernel()
        }
        let pairs = try AppendFile(out), passed = try AppendFile(skippedPath)
        var already = 0, written = 0
        for (i, prompt) in prompts.enumerated() {
            guard let tokens = encoded[i] else { already += 1; continue }
            if already > 0 && !quiet { note("\(already) of \(prompts.count) prompts already judged in \(out); continuing") }
            already = 0
            // The samples of prompt i depend only on the seed and i.
            generator.sampler.random = Random(seed: seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
            let first = generator.generate(tokens: tokens, maxTokens: maxTokens, stops: stops, throughEndOfText: ignoreEOS).text
            let second = generator.generate(tokens: tokens, maxTokens: maxTokens, stops: stops, throughEndOfText: ignoreEOS).text
            let decision: Character
            if first == second {
                decision = "="   // nothing to prefer
            } else if let judge {
                decision = try Self.ask(judge, prompt: prompt, first, second, index: i + 1, written: written, out: out)
            } else {
                decision = try terminal!.ask(prompt: prompt, first, second, index: i + 1, of: prompts.count)
            }
            switch decision {
            case "1", "2":
                let (chosen, rejected) = decision == "1" ? (first, second) : (second, first)
                try pairs.append("{\"prompt\":\(jsonString(prompt)),\"chosen\":\(jsonString(chosen)),\"rejected\":\(jsonString(rejected))}\n")
                written += 1
            case "=", "s":
                try passed.append("{\"prompt\":\(jsonString(prompt)),\"decision\":\"\(decision == "=" ? (first == second ? "same" : "tie") : "skip")\"}\n")
            default:   // q
                if !quiet { note("stopped: \(written) new pairs in \(out); run the same command again to continue") }
                return 0
            }
            if judge != nil && !quiet && isatty(2) != 0 { fputs("\r\u{1B}[Kjudged \(i + 1)/\(prompts.count), \(written) new pairs", stderr) }
        }
        if judge != nil && !quiet && isatty(2) != 0 { fputs("\n", stderr) }
        if !quiet { note(already == prompts.count ? "all \(already) prompts are judged already in \(out)" : "done: \(written) new pairs in \(out)") }
        return 0
    }

    /// Prompt lines of the files, or of standard input.
    func readPrompts() throws -> [String] {
        var texts: [(String, Data)] = []
        if promptFiles.isEmpty || promptFiles == ["-"] {
            if isatty(0) != 0 { throw GenError.usage("give the prompts as a file, or on standard input") }
            texts.append(("standard input", try readStandardInput()))
        } else {
            for f in promptFiles {
                if f == "-" { texts.append(("standard input", try readStandardInput())); continue }
                guard !isFolder(f), let d = FileManager.default.contents(atPath: f) else { throw GenError("cannot read \(f)") }
                texts.append((f, d))
            }
        }
        var prompts: [String] = []
        for (name, d) in texts {
            let s = try Corpus.text(d, name: name)
            prompts += s.split(separator: "\n", omittingEmptySubsequences: true).map { String($0.hasSuffix("\r") ? $0.dropLast() : $0) }
                .filter { !$0.allSatisfy(\.isWhitespace) }
        }
        guard !prompts.isEmpty else { throw GenError("no prompts: every line is blank") }
        return prompts
    }

    /// How many times each prompt was judged already: pairs in --out, ties and skips beside it.
    func judgedPrompts() throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for path in [out, skippedPath] where FileManager.default.fileExists(atPath: path) {
            guard let d = FileManager.default.contents(atPath: path) else { throw GenError("cannot read \(path)") }
            let text = try Corpus.text(d, name: path)
            for (k, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
                guard let obj = try? JSON.parse(String(line)), let p = obj["prompt"]?.string else {
                    throw GenError("\(path) line \(k + 1) is not a JSON object with a \"prompt\"; gen appends only to its own files")
                }
                counts[p, default: 0] += 1
            }
        }
        return counts
    }

    /// The judge's answer for one prompt.
    static func ask(_ command: String, prompt: String, _ first: String, _ second: String, index: Int, written: Int, out: String) throws -> Character {
        let kept = "; the \(written) pairs written before are kept in \(out)"
        let request = "{\"prompt\":\(jsonString(prompt)),\"completions\":[\(jsonString(first)),\(jsonString(second))]}\n"
        let (status, answer) = try runShell(command, input: Array(request.utf8))
        guard status == 0 else {
            throw GenError("the judge failed (exit status \(status)) on prompt \(index)\(kept)")
        }
        let line = String(decoding: answer, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first
            .map { $0.trimmed() } ?? ""
        guard line.count == 1, let c = line.first, "12=s".contains(c) else {
            throw GenError("the judge answered \(quoted(line, limit: 40)) on prompt \(index), not 1, 2, = or s\(kept)")
        }
        return c
    }
}

/// A file that lines are appended to, each in one write, so that a stop at any moment leaves
/// whole lines.
final class AppendFile {
    let fd: Int32
    let path: String

    init(_ path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GenError("cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    func append(_ line: String) throws {
        let bytes = Array(line.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        guard n == bytes.count else { throw GenError("cannot write \(path): \(String(cString: strerror(errno)))") }
    }
}

/// The person at the terminal: the pair shown on stderr, one key read from /dev/tty without
/// echo (so prompts may come from standard input). The terminal's mode is restored afterwards.
final class Terminal {
    let fd: Int32
    var saved = termios()

    init() throws {
        fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw GenError.usage("gen review needs a terminal to ask in, or --judge CMD") }
        guard tcgetattr(fd, &saved) == 0 else { close(fd); throw GenError.usage("gen review needs a terminal to ask in, or --judge CMD") }
    }

    deinit {
        tcsetattr(fd, TCSANOW, &saved)
        close(fd)
    }

    func ask(prompt: String, _ first: String, _ second: String, index: Int, of count: Int) throws -> Character {
        let dim = "\u{1B}[2m", bold = "\u{1B}[1m", reset = "\u{1B}[0m"
        let rule = String(repeating: "─", count: max(10, min(terminalColumns(), 100) - 20))
        fputs("\n\(bold)── prompt \(index) of \(count) \(rule)\(reset)\n", stderr)
        for (label, text) in [("1", first), ("2", second)] {
            fputs("\(bold)[\(label)]\(reset) \(dim)\(prompt)\(reset)\(text)\n\n", stderr)
        }
        fputs("\(bold)Which is better?\(reset) 1 or 2, = tie, s skip, q quit: ", stderr)
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG)
        withUnsafeMutablePointer(to: &raw.c_cc) { cc in
            cc.withMemoryRebound(to: cc_t.self, capacity: Int(NCCS)) { $0[Int(VMIN)] = 1; $0[Int(VTIME)] = 0 }
        }
        tcsetattr(fd, TCSANOW, &raw)
        defer { tcsetattr(fd, TCSANOW, &saved) }
        while true {
            var c: UInt8 = 0
            let n = read(fd, &c, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { fputs("\n", stderr); return "q" }   // the terminal went away
            switch c {
            case UInt8(ascii: "1"), UInt8(ascii: "2"), UInt8(ascii: "="), UInt8(ascii: "s"), UInt8(ascii: "q"):
                fputs("\(Character(Unicode.Scalar(c)))\n", stderr)
                return Character(Unicode.Scalar(c))
            case 3, 4:   // Ctrl-C, Ctrl-D
                fputs("q\n", stderr)
                return "q"
            default:
                continue
            }
        }
    }
}

/// Runs `sh -c command` with `input` on its standard input (stdout captured, stderr shared);
/// returns its exit status (128 + the signal when one ended it) and what it wrote. A command
/// that does not read its input does not stop gen (SIGPIPE is ignored; EPIPE is fine).
func runShell(_ command: String, input: [UInt8]) throws -> (status: Int32, output: [UInt8]) {
    var toChild: [Int32] = [0, 0], fromChild: [Int32] = [0, 0]
    guard pipe(&toChild) == 0 else { throw GenError("cannot run the judge: no pipe") }
    guard pipe(&fromChild) == 0 else {
        close(toChild[0]); close(toChild[1])
        throw GenError("cannot run the judge: no pipe")
    }
    for fd in toChild + fromChild { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }   // the child keeps only its dup2'd 0 and 1
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
    posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
    // gen ignores SIGPIPE; the judge gets the default back (a pipeline inside it ends quietly).
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGPIPE)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
    defer { for a in argv { free(a) } }
    let spawned = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environ)
    close(toChild[0]); close(fromChild[1])
    guard spawned == 0 else {
        close(toChild[1]); close(fromChild[0])
        throw GenError("cannot run the judge: \(String(cString: strerror(spawned)))")
    }
    writeAll(toChild[1], input)
    close(toChild[1])
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fromChild[0], $0.baseAddress!, 4096) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += chunk[0..<n]
    }
    close(fromChild[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import as macros.
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, output)
}
