import FoundationEssentials
import Glibc
import GenKit

/// `gen sample`: options decoded once; generation is a `Generator`.
struct SampleOptions {
    static let spec = CommandSpec(
        name: "sample",
        abstract: "Generate text from a model.",
        discussion: """
        The prompt is --prompt, else --prompt-file, else standard input when it is not a terminal. An \
        empty prompt starts from the newline token when the vocabulary has one, else from a random \
        token (chosen with --seed). Text streams to stdout as it is made: the prompt, then the \
        completion. With --each-line every input line is its own prompt and stdout gets one line per \
        prompt holding only its completion, with a newline inside it written as \\n and a backslash \
        as \\\\. When prompt and output outgrow the context, each token is predicted from the last \
        <context> tokens.
        """,
        options: [
            fromOption,
            adapterOption,
            weightsOption,
            OptionSpec(name: "prompt", short: "p", value: "text", help: "Text to continue."),
            OptionSpec(name: "prompt-file", short: "f", value: "file", help: "Read the prompt from this file (- for standard input)."),
            OptionSpec(name: "max-tokens", short: "n", value: "n", help: "Tokens to generate per sample.", defaultValue: "500"),
            OptionSpec(name: "temperature", aliases: ["temp"], value: "t", help: "Sampling temperature; 0 always picks the most likely token.", defaultValue: "0.8"),
            topKOption,
            topPOption,
            OptionSpec(name: "min-p", value: "p", help: "Drop tokens less likely than p times the most likely one.", defaultValue: "0"),
            OptionSpec(name: "repeat-penalty", value: "x", help: "Penalise the last 64 tokens' logits by this factor (1: off).", defaultValue: "1.0"),
            OptionSpec(name: "stop", value: "text", help: "End a sample before this text (repeatable).", repeated: true),
            OptionSpec(name: "count", value: "n", help: "Samples to generate.", defaultValue: "1"),
            OptionSpec(name: "seed", short: "s", value: "n", help: "Seed for reproducible samples (default: random)."),
            threadsOption,
            OptionSpec(name: "ignore-eos", value: nil, help: "Keep going past <|endoftext|> (by default a sample ends there)."),
            OptionSpec(name: "each-line", value: nil, help: "Treat each line of standard input as a prompt; write one completion per line."),
            OptionSpec(name: "json", value: nil, help: "Write one JSON object per sample: prompt, completion, tokens, tokens_per_s."),
        ])

    var from: String
    var adapter: String?
    var weights: String
    var prompt: String?
    var promptFile: String?
    var parameters = SamplingParameters()
    var maxTokens: Int
    var count: Int
    var seed: UInt64
    var threads: Int
    var eachLine: Bool
    var ignoreEOS: Bool
    var json: Bool
    var stops: [String]

    init(_ a: ParsedArguments) throws {
        from = a.string("from")!
        adapter = a.string("adapter")
        weights = try a.choice("weights", ["fp32", "int8"])
        prompt = a.string("prompt")
        promptFile = a.string("prompt-file")
        parameters.temperature = try a.float("temperature", min: 0)
        parameters.topK = try a.int("top-k", min: 0)
        parameters.topP = try a.float("top-p", min: 0, max: 1)
        parameters.minP = try a.float("min-p", min: 0, max: 1)
        parameters.repeatPenalty = try a.float("repeat-penalty", min: 0.01)
        maxTokens = try a.int("max-tokens", min: 0)
        count = try a.int("count", min: 1)
        seed = a.has("seed") ? UInt64(try a.int("seed", min: 0)) : UInt64.random(in: 0...UInt64(Int64.max))
        threads = try threadCount(a)
        eachLine = a.has("each-line")
        ignoreEOS = a.has("ignore-eos")
        json = a.has("json")
        stops = a.strings("stop")
        if prompt != nil && promptFile != nil { throw GenError.usage("--prompt and --prompt-file cannot be used together") }
        if eachLine && (prompt != nil || promptFile != nil) {
            throw GenError.usage("--each-line reads prompts from standard input; it cannot be used with --prompt or --prompt-file")
        }
    }

    func run() throws -> Int32 {
        let ck = try loadModel(from, adapter: adapter, weights: weights, forDecoding: true)
        let generator = try Generator(model: ck.model, tokenizer: ck.tokenizer, parameters: parameters, seed: seed, threads: threads)
        func jsonLine(_ prompt: String, _ c: Generator.Completion) -> String {
            "{\"prompt\":\(jsonString(prompt)),\"completion\":\(jsonString(c.text)),\"tokens\":\(c.tokens),\"tokens_per_s\":\(cFormat("%.1f", c.tokensPerSecond))}\n"
        }
        if eachLine {
            try loadMatrixKernel()   // prompts not known yet
            let lines = InputLines()
            while let line = try lines.next() {
                for _ in 0..<count {
                    let c: Generator.Completion
                    do { c = try generator.generate(line, maxTokens: maxTokens, stops: stops, throughEndOfText: ignoreEOS) } catch let e as GenError {
                        throw GenError("standard input line \(lines.number): \(e.message)")   // which prompt, in a long input
                    }
                    try Output.write(json ? jsonLine(line, c)
                                          : escapedLine(c.text) + "\n")
                }
            }
            return 0
        }
        let prompt = try readPrompt()
        // Unknown characters are refused before anything is printed. OpenBLAS is loaded only when
        // the prompt needs it (a one-token prompt within the context starts sooner without it).
        let promptTokens = try ck.tokenizer.encode(prompt).count
        if generator.multipliesMatrices(promptTokens: promptTokens, maxTokens: maxTokens) { try loadMatrixKernel() }
        for i in 0..<count {
            if json {
                try Output.write(jsonLine(prompt, try generator.generate(prompt, maxTokens: maxTokens, stops: stops, throughEndOfText: ignoreEOS)))
            } else {
                if i > 0 { try Output.write("\n---\n") }
                try Output.write(prompt)
                var failure: Error?
                try generator.generate(prompt, maxTokens: maxTokens, stops: stops, throughEndOfText: ignoreEOS) { text in
                    if failure == nil { do { try Output.write(text) } catch { failure = error } }
                }
                if let failure { throw failure }
            }
        }
        if !json { try Output.write("\n") }
        return 0
    }

    /// --prompt, --prompt-file (- for standard input), else standard input when it is not a
    /// terminal, else empty.
    func readPrompt() throws -> String {
        if let prompt { return prompt }
        let data: Data
        let name: String
        if promptFile == "-" {
            data = try readStandardInput()
            name = "the prompt on standard input"
        } else if let promptFile {
            if isFolder(promptFile) { throw GenError("the prompt file \(promptFile) is a folder") }
            guard let d = FileManager.default.contents(atPath: promptFile) else {
                throw GenError("cannot read the prompt file \(promptFile)\(FileManager.default.fileExists(atPath: promptFile) ? "" : ": no such file")")
            }
            data = d
            name = promptFile
        } else if isatty(0) == 0 {
            data = try readStandardInput()
            name = "the prompt on standard input"
        } else {
            return ""
        }
        return try Corpus.text(data, name: name)
    }
}

/// A completion on one line: a backslash as \\ and a newline as \n.
func escapedLine(_ text: String) -> String {
    var out = String.UnicodeScalarView()
    for u in text.unicodeScalars {
        switch u {
        case "\\": out.append(contentsOf: "\\\\".unicodeScalars)
        case "\n": out.append(contentsOf: "\\n".unicodeScalars)
        default: out.append(u)
        }
    }
    return String(out)
}
