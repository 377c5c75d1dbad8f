import Foundation
import GenKit

let tokenizerTrainSpec = CommandSpec(
    name: "tokenizer train",
    abstract: "Train a byte-level BPE tokenizer and write it as a Hugging Face tokenizer.json.",
    discussion: """
    Ids 0-255 are the bytes, then one id per merge, then the special tokens. Of pairs with equal \
    counts, the one with the smaller ids merges first. The file loads in Python's `tokenizers` \
    (Tokenizer.from_file) and in gen (--tokenizer FILE).
    """,
    arguments: [("corpus", "Text files (UTF-8) to learn from.", false, true)],
    options: [
        OptionSpec(name: "vocab-size", value: "n", help: "Ids in all: 256 bytes + merges + special tokens.", defaultValue: "4096"),
        OptionSpec(name: "pattern", value: "name", help: "Pre-tokenization pattern: gpt2 or gpt4.", defaultValue: "gpt2"),
        OptionSpec(name: "special", value: "token", help: "A special token such as <|endoftext|> (repeatable).", defaultValue: nil, repeated: true),
        OptionSpec(name: "out", value: "file", help: "Where to write tokenizer.json.", defaultValue: "tokenizer.json"),
        OptionSpec(name: "force", value: nil, help: "Replace an existing --out file.", defaultValue: nil),
        OptionSpec(name: "quiet", value: nil, help: "Print no progress.", defaultValue: nil),
    ])

/// `--from` of the tokenize and detokenize commands.
let tokenizerFromOption = OptionSpec(name: "from", value: "file", help: "A model (.safetensors) or a tokenizer.json.", defaultValue: nil)

let tokenizeSpec = CommandSpec(
    name: "tokenize",
    abstract: "Turn text on standard input into token ids.",
    discussion: "Each input line becomes one output line of space-separated ids (the newline itself is not encoded).",
    options: [
        tokenizerFromOption,
        OptionSpec(name: "count", value: nil, help: "Print only the number of tokens of the whole input.", defaultValue: nil),
        OptionSpec(name: "stats", value: nil, help: "With --count: also print bytes, tokens and encoding time as JSON on stderr.", defaultValue: nil),
        OptionSpec(name: "allow-special", value: nil, help: "Encode special-token text (e.g. <|endoftext|>) as the special token.", defaultValue: nil),
    ])

let detokenizeSpec = CommandSpec(
    name: "detokenize",
    abstract: "Turn token ids on standard input back into text.",
    discussion: "Each input line of space-separated ids becomes one line of text.",
    options: [tokenizerFromOption])

/// The tokenizer of a model file or a tokenizer.json (Hugging Face's or gen's own form).
func loadTokenizer(_ path: String) throws -> Tokenizer {
    guard let head = FileHandle(forReadingAtPath: path)?.readData(ofLength: 9) else { throw GenError("cannot read \(path)") }
    if head.count == 9 && head[8] == UInt8(ascii: "{") && head[0...7].contains(where: { $0 != 0 }) && head[7] == 0 {
        return try Checkpoint.load(path).tokenizer
    }
    guard let data = FileManager.default.contents(atPath: path),
          let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw GenError("\(path) is neither a gen model nor a tokenizer JSON file")
    }
    if let type = obj["type"] as? String, type == "char" || type == "bpe" {
        return try makeTokenizer(json: String(decoding: data, as: UTF8.self))
    }
    return try BPETokenizer.huggingFace(path: path)
}

func runTokenizerTrain(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: tokenizerTrainSpec)
    guard !a.positionals.isEmpty else { throw UsageError(message: "Missing expected argument '<corpus> ...'", command: a.spec) }
    let vocab = try a.int("vocab-size", min: 257)
    guard let pattern = SplitPattern(rawValue: a.string("pattern")!) else {
        throw UsageError(message: "The value '\(a.string("pattern")!)' is invalid for '--pattern <name>': gpt2 or gpt4", command: a.spec)
    }
    let out = a.string("out")!
    if FileManager.default.fileExists(atPath: out) && !a.has("force") {
        throw GenError("\(out) already exists; pass --force to replace it, or choose another --out")
    }
    let quiet = a.has("quiet")
    let started = Date()
    let tok = try BPETrainer.train(paths: a.positionals, vocabSize: vocab, pattern: pattern, special: a.strings("special")) { done, total in
        if !quiet && isatty(2) != 0 { fputs("\rmerges \(done)/\(total)", stderr) }
    }
    if !quiet && isatty(2) != 0 { fputs("\r\u{1B}[K", stderr) }
    try writeAtomically(tok.huggingFaceJSON, to: out)
    if !quiet {
        fputs("wrote \(out): \(tok.vocabSize) tokens (\(tok.merges.count) merges, pattern \(pattern.rawValue)) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s\n", stderr)
    }
    return 0
}

func writeAtomically(_ text: String, to path: String) throws {
    let bytes = Array(text.utf8)
    try bytes.withUnsafeBytes { raw in
        try SafeTensorsWriter.writeRaw(raw, to: path)
    }
}

func runTokenize(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: tokenizeSpec)
    guard let from = a.string("from") else { throw UsageError(message: "Missing expected argument '--from <file>'", command: a.spec) }
    let tok = try loadTokenizer(from)
    let allow = a.has("allow-special")
    func encode(_ s: String) throws -> [Int32] {
        if let b = tok as? BPETokenizer { return b.encode(s, allowSpecial: allow) }
        return try tok.encode(s)
    }
    if a.has("count") {
        var data = Data()
        while let chunk = try FileHandle.standardInput.read(upToCount: 1 << 20), !chunk.isEmpty { data.append(chunk) }
        guard let s = String(data: data, encoding: .utf8) else { throw GenError("standard input is not valid UTF-8") }
        let t0 = Date()
        let n = try encode(s).count
        let seconds = Date().timeIntervalSince(t0)
        print(n)
        if a.has("stats") {
            fputs("{\"bytes\":\(data.count),\"tokens\":\(n),\"seconds\":\(seconds),\"mb_per_s\":\(Double(data.count) / 1e6 / seconds)}\n", stderr)
        }
        return 0
    }
    while let line = readLine(strippingNewline: true) {
        emit(try encode(line).map(String.init).joined(separator: " ") + "\n")
    }
    return 0
}

func runDetokenize(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: detokenizeSpec)
    guard let from = a.string("from") else { throw UsageError(message: "Missing expected argument '--from <file>'", command: a.spec) }
    let tok = try loadTokenizer(from)
    var lineNumber = 0
    while let line = readLine(strippingNewline: true) {
        lineNumber += 1
        var ids: [Int32] = []
        for field in line.split(separator: " ", omittingEmptySubsequences: true) {
            guard let id = Int32(field), id >= 0, Int(id) < tok.vocabSize else {
                throw GenError("line \(lineNumber): '\(field)' is not a token id (0..<\(tok.vocabSize))")
            }
            ids.append(id)
        }
        emit(tok.decode(ids) + "\n")
    }
    return 0
}
