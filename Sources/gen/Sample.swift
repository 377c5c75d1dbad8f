import Foundation
import GenKit

let sampleSpec = CommandSpec(
    name: "sample",
    abstract: "Generate text from a model.",
    discussion: """
    The prompt is --prompt, else standard input when it is not a terminal. An empty prompt starts \
    from the newline token when the vocabulary has one, else from a random token (chosen with \
    --seed). Text streams to stdout as it is made: the prompt, then the completion. With \
    --each-line every input line is its own prompt and stdout gets one line per prompt holding \
    only its completion, with a newline inside it written as \\n and a backslash as \\\\. When \
    prompt and output outgrow the context, each token is predicted from the last <context> tokens.
    """,
    options: [
        OptionSpec(name: "from", value: "file", help: "The model file.", defaultValue: nil),
        OptionSpec(name: "prompt", value: "text", help: "Text to continue.", defaultValue: nil),
        OptionSpec(name: "max-tokens", value: "n", help: "Tokens to generate per sample.", defaultValue: "500"),
        OptionSpec(name: "temperature", value: "t", help: "Sampling temperature; 0 always picks the most likely token.", defaultValue: "0.8"),
        OptionSpec(name: "top-k", value: "k", help: "Sample among the k most likely tokens only (0: all).", defaultValue: "0"),
        OptionSpec(name: "top-p", value: "p", help: "Sample among the most likely tokens whose probabilities reach p.", defaultValue: "1.0"),
        OptionSpec(name: "min-p", value: "p", help: "Drop tokens less likely than p times the most likely one.", defaultValue: "0"),
        OptionSpec(name: "repeat-penalty", value: "x", help: "Penalise the last 64 tokens' logits by this factor (1: off).", defaultValue: "1.0"),
        OptionSpec(name: "stop", value: "text", help: "End a sample before this text (repeatable).", defaultValue: nil, repeated: true),
        OptionSpec(name: "count", value: "n", help: "Samples to generate.", defaultValue: "1"),
        OptionSpec(name: "seed", value: "n", help: "Seed for reproducible samples (default: random).", defaultValue: nil),
        OptionSpec(name: "threads", value: "n", help: "Threads to use.", defaultValue: "\(Parallel.cores)"),
        OptionSpec(name: "each-line", value: nil, help: "Treat each line of standard input as a prompt; write one completion per line.", defaultValue: nil),
        OptionSpec(name: "json", value: nil, help: "Write one JSON object per sample: prompt, completion, tokens, tokens_per_s.", defaultValue: nil),
    ])

/// Writes to stdout unbuffered enough to stream.
func emit(_ s: String) {
    guard !s.isEmpty else { return }
    fputs(s, stdout)
    fflush(stdout)
}

func runSample(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: sampleSpec)
    guard let from = a.string("from") else { throw UsageError(message: "Missing expected argument '--from <file>'", command: a.spec) }
    if !a.positionals.isEmpty { throw UsageError(message: "Unexpected argument '\(a.positionals[0])'", command: a.spec) }
    var params = SamplingParameters()
    params.temperature = try a.float("temperature", min: 0)
    params.topK = try a.int("top-k", min: 0)
    params.topP = try a.float("top-p", min: 0, max: 1)
    params.minP = try a.float("min-p", min: 0, max: 1)
    params.repeatPenalty = try a.float("repeat-penalty", min: 0.01)
    let maxTokens = try a.int("max-tokens", min: 0)
    let count = try a.int("count", min: 1)
    let threads = try a.int("threads", min: 1)
    let seed: UInt64 = a.has("seed") ? UInt64(try a.int("seed", min: 0)) : UInt64.random(in: 0...UInt64(Int64.max))
    let eachLine = a.has("each-line")
    let json = a.has("json")
    let stops = a.strings("stop")
    Parallel.threads = threads
    BLAS.setThreads(threads)

    let ck = try Checkpoint.load(from)
    let tok = ck.tokenizer
    let decoder = Decoder(model: ck.model)
    let sampler = Sampler(vocabSize: tok.vocabSize, parameters: params, seed: seed)
    let V = tok.vocabSize
    let T = ck.model.config.blockSize
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: V)
    defer { scratch.deallocate() }

    /// Generates one completion of `prompt`; `write` receives text as it is made.
    func generate(_ prompt: String, write: (String) -> Void) throws -> (text: String, tokens: Int, seconds: Double) {
        var ids = try tok.encode(prompt)
        if ids.isEmpty {
            ids = [tok.newlineToken ?? Int32(sampler.random.nextInt(below: V))]
        }
        let start = Date()
        ids.suffix(T).withUnsafeBufferPointer { decoder.fill($0) }
        var stream = Utf8Stream()
        var stop = StopMatcher(stops)
        var text = ""
        var made = 0
        while made < maxTokens && !stop.stopped {
            scratch.update(from: decoder.logits, count: V)
            let next = sampler.sample(scratch, recent: ids[...])
            ids.append(next)
            made += 1
            let piece = stop.push(stream.push(tok.bytes(of: next)))
            text += piece
            write(piece)
            if stop.stopped || made == maxTokens { break }
            ids.withUnsafeBufferPointer { decoder.advance(token: next, history: $0) }
        }
        let tail = stop.push(stream.finish()) + stop.finish()
        text += tail
        write(tail)
        return (text, made, Date().timeIntervalSince(start))
    }

    func jsonLine(_ prompt: String, _ r: (text: String, tokens: Int, seconds: Double)) -> String {
        "{\"prompt\":\(jsonString(prompt)),\"completion\":\(jsonString(r.text)),\"tokens\":\(r.tokens),\"tokens_per_s\":\(String(format: "%.1f", Double(r.tokens) / max(r.seconds, 1e-9)))}\n"
    }

    if eachLine {
        if a.has("prompt") { throw UsageError(message: "--each-line reads prompts from standard input; it cannot be used with --prompt", command: a.spec) }
        while let line = readLine(strippingNewline: true) {
            for _ in 0..<count {
                let r = try generate(line) { _ in }
                if json {
                    emit(jsonLine(line, r))
                } else {
                    emit(r.text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n") + "\n")
                }
            }
        }
        return 0
    }

    var prompt = a.string("prompt") ?? ""
    if !a.has("prompt") && isatty(0) == 0 {
        var data = Data()
        while let chunk = try FileHandle.standardInput.read(upToCount: 1 << 16), !chunk.isEmpty { data.append(chunk) }
        guard let s = String(data: data, encoding: .utf8) else { throw GenError("the prompt on standard input is not valid UTF-8") }
        prompt = s
    }
    _ = try tok.encode(prompt)   // refuse unknown characters before printing anything
    for i in 0..<count {
        if json {
            emit(jsonLine(prompt, try generate(prompt) { _ in }))
        } else {
            if i > 0 { emit("\n---\n") }
            emit(prompt)
            _ = try generate(prompt) { emit($0) }
        }
    }
    if !json { emit("\n") }
    return 0
}
