import FoundationEssentials
import Glibc
import GenKit

/// `gen eval`: a model's loss on a text, through an `Evaluator`.
struct EvalOptions {
    static let spec = CommandSpec(
        name: "eval",
        abstract: "Measure a model's loss on a text.",
        discussion: """
        The text's tokens x[0..N-1] are cut into consecutive windows of the model's context T: \
        window k reads x[kT ..< min(kT+T, N-1)] and predicts the token after each. Prints the mean \
        cross-entropy over all N-1 predictions (nats per token), its perplexity, and bits per byte \
        (total bits over the text's UTF-8 bytes), which compares models with different tokenizers.
        """,
        arguments: [ArgumentSpec(name: "textfile", help: "The text (UTF-8); '-' reads standard input.")],
        options: [
            fromOption,
            adapterOption,
            weightsOption,
            threadsOption,
            OptionSpec(name: "json", value: nil, help: "Print {\"loss\", \"perplexity\", \"bits_per_byte\", \"tokens\", \"bytes\"}."),
        ])

    var from: String
    var adapter: String?
    var weights: String
    var text: String
    var threads: Int
    var json: Bool

    init(_ a: ParsedArguments) throws {
        from = a.string("from")!
        adapter = a.string("adapter")
        weights = try a.choice("weights", ["fp32", "int8"])
        text = a.positionals[0]
        threads = try threadCount(a)
        json = a.has("json")
    }

    func run() throws -> Int32 {
        // In 8 bits, the weights are held as sampling holds them (in 8 bits alone): the loss of
        // rounding an fp32 copy (to float rounding), without one.
        let ck = try loadModel(from, adapter: adapter, weights: weights, forDecoding: weights == "int8")
        let files = try CorpusFiles([text], folder: temporaryDirectory())
        let r: Evaluator.Result
        do {
            var skipped = 0
            let data = try TokenData(encoding: files.paths, with: ck.tokenizer, cacheDirectory: temporaryDirectory(),
                                     skipped: &skipped, threads: threads)
            guard data.count >= 2 else { throw GenError("\(text) has \(data.count) token; eval needs at least 2") }
            // Up to 8 windows at a time; a short text's activations hold only its windows.
            let windows = (data.count - 1 + ck.model.config.blockSize - 1) / ck.model.config.blockSize
            r = try Evaluator(model: ck.model, threads: threads, batchSize: min(8, windows)).evaluate(data)
        } catch {
            throw files.named(error)
        }
        if json {
            try Output.line("{\"loss\":\(r.loss),\"perplexity\":\(r.perplexity),\"bits_per_byte\":\(r.bitsPerByte),\"tokens\":\(r.tokens),\"bytes\":\(r.bytes)}")
        } else {
            try Output.line(cFormat("loss %.4f nats/token, perplexity %.3f, %.4f bits/byte (%ld tokens, %ld bytes)",
                                   r.loss, r.perplexity, r.bitsPerByte, r.tokens, r.bytes))
        }
        return 0
    }
}
