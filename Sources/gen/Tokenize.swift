import FoundationEssentials
import Glibc
import GenKit

/// `gen tokenizer train`.
struct TokenizerTrainOptions {
    static let spec = CommandSpec(
        name: "tokenizer train",
        abstract: "Train a byte-level BPE tokenizer and write it as a Hugging Face tokenizer.json.",
        discussion: """
        Ids 0-255 are the bytes, then one id per merge, then the special tokens. Of pairs with equal \
        counts, the one with the smaller ids merges first. The file loads in Python's `tokenizers` \
        (Tokenizer.from_file) and in gen (--tokenizer FILE).
        """,
        arguments: [ArgumentSpec(name: "corpus", help: "Text files (UTF-8) to learn from; '-' reads standard input.", repeated: true)],
        options: [
            OptionSpec(name: "vocab-size", value: "n", help: "Ids in all: 256 bytes + merges + special tokens.", defaultValue: "4096"),
            OptionSpec(name: "pattern", value: "name", help: "Pre-tokenization pattern: gpt2 or gpt4.", defaultValue: "gpt2"),
            OptionSpec(name: "special", value: "token", help: "A special token such as <|endoftext|> (repeatable).", repeated: true),
            OptionSpec(name: "out", value: "file", help: "Where to write tokenizer.json.", defaultValue: "tokenizer.json"),
            OptionSpec(name: "force", value: nil, help: "Replace an existing --out file."),
            OptionSpec(name: "quiet", value: nil, help: "Print no progress."),
        ])

    var corpus: [String]
    var vocabSize: Int
    var pattern: SplitPattern
    var special: [String]
    var out: String
    var force: Bool, quiet: Bool

    init(_ a: ParsedArguments) throws {
        corpus = a.positionals
        vocabSize = try a.int("vocab-size", min: 257, max: 1 << 22)
        pattern = SplitPattern(rawValue: try a.choice("pattern", ["gpt2", "gpt4"]))!
        special = a.strings("special")
        out = a.string("out")!
        force = a.has("force")
        quiet = a.has("quiet")
    }

    func run() throws -> Int32 {
        if isFolder(out) { throw GenError("--out \(out) is a folder") }
        if FileManager.default.fileExists(atPath: out) && !force {
            throw GenError("\(out) already exists; pass --force to replace it, or choose another --out")
        }
        try refuseInputAsOutput(out, written: [out], inputs: corpus)
        let started = Date()
        let live = !quiet && isatty(2) != 0
        // Standard input ("-") and pipes are read once into a file beside --out, as `gen train` reads them.
        let files = try CorpusFiles(corpus, folder: Paths.folder(of: out))
        let tok: BPETokenizer
        do {
            tok = try BPETrainer.train(paths: files.paths, vocabSize: vocabSize, pattern: pattern, special: special) { done, total in
                if live { fputs("\rmerges \(done)/\(total)", stderr) }
            }
        } catch { throw files.named(error) }
        if live { fputs("\r\u{1B}[K", stderr) }
        try tok.writeHuggingFaceJSON(to: out)
        if !quiet {
            note("wrote \(out): \(tok.vocabSize) tokens (\(tok.merges.count) merges, pattern \(pattern.rawValue)) in \(cFormat("%.2f", Date().timeIntervalSince(started))) s")
        }
        return 0
    }
}

/// `gen tokenize` and `gen detokenize`.
struct TokenizeOptions {
    static let tokenizerFrom = OptionSpec(name: "from", short: "m", value: "file", help: "A model (.safetensors) or a tokenizer.json.", required: true)

    static let spec = CommandSpec(
        name: "tokenize",
        abstract: "Turn text on standard input into token ids.",
        discussion: "Each input line becomes one output line of space-separated ids (the newline itself is not encoded).",
        options: [
            tokenizerFrom,
            OptionSpec(name: "count", value: nil, help: "Print only the number of tokens of the whole input."),
            OptionSpec(name: "stats", value: nil, help: "With --count: also print bytes, tokens and encoding time as JSON on stderr."),
            OptionSpec(name: "allow-special", value: nil, help: "Encode special-token text (e.g. <|endoftext|>) as the special token."),
        ])

    static let detokenizeSpec = CommandSpec(
        name: "detokenize",
        abstract: "Turn token ids on standard input back into text.",
        discussion: "Each input line of space-separated ids becomes one line of text.",
        options: [tokenizerFrom])

    var from: String
    var count: Bool, stats: Bool, allowSpecial: Bool

    init(_ a: ParsedArguments) throws {
        from = a.string("from")!
        count = a.has("count")
        stats = a.has("stats")
        allowSpecial = a.has("allow-special")
    }

    func run() throws -> Int32 {
        let tok = try loadTokenizer(from)
        func encode(_ s: String) throws -> [Int32] {
            if let b = tok as? BPETokenizer { return b.encode(s, allowSpecial: allowSpecial) }
            return try tok.encode(s)
        }
        if count {
            // The input is counted in parts cut where both split patterns always start a chunk
            // (so the parts' ids are the whole text's), holding only what is not yet cut; a
            // special token that could span such a cut keeps the input whole.
            let special = allowSpecial ? (tok as? BPETokenizer)?.special.keys.map { $0 } ?? [] : []
            let cuts = !special.contains { $0.utf8.contains(0x0A) }
            var bytes = 0, n = 0, seconds = 0.0
            func count(_ part: UnsafeBufferPointer<UInt8>, _ offset: Int) throws {
                let s = try Corpus.text(part, name: "standard input", offset: offset)
                let t0 = Date()
                n += try encode(s).count
                seconds += Date().timeIntervalSince(t0)
                bytes += part.count
            }
            let (rest, offset) = try readStandardInput(inParts: { held, from in
                cuts ? BPETokenizer.lastSafeCut(held.baseAddress!, held.count, from: from) : nil
            }, count)
            try rest.withUnsafeBytes { try count($0.bindMemory(to: UInt8.self), offset) }
            try Output.line(String(n))
            if stats {
                note("{\"bytes\":\(bytes),\"tokens\":\(n),\"seconds\":\(seconds),\"mb_per_s\":\(Double(bytes) / 1e6 / seconds)}")
            }
            return 0
        }
        let lines = InputLines()
        while let line = try lines.next() {
            try Output.line(try encode(line).map(String.init).joined(separator: " "))
        }
        return 0
    }

    static func runDetokenize(_ a: ParsedArguments) throws -> Int32 {
        let tok = try loadTokenizer(a.string("from")!)
        let lines = InputLines()
        while let line = try lines.next() {
            var ids: [Int32] = []
            for field in line.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                guard let id = Int32(field), id >= 0, Int(id) < tok.vocabSize else {
                    throw GenError("standard input line \(lines.number): \(quoted(field)) is not a token id (0..<\(tok.vocabSize))")
                }
                ids.append(id)
            }
            try Output.line(tok.decode(ids))
        }
        return 0
    }
}
