import Foundation
import GenKit

let evalSpec = CommandSpec(
    name: "eval",
    abstract: "Measure a model's loss on a text.",
    discussion: """
    The text's tokens x[0..N-1] are cut into consecutive windows of the model's context T: \
    window k reads x[kT ..< min(kT+T, N-1)] and predicts the token after each. Prints the mean \
    cross-entropy over all N-1 predictions (nats per token), its perplexity, and bits per byte \
    (total bits over the text's UTF-8 bytes), which compares models with different tokenizers.
    """,
    arguments: [("textfile", "The text (UTF-8); '-' reads standard input.", false, false)],
    options: [
        OptionSpec(name: "from", value: "file", help: "The model file.", defaultValue: nil),
        OptionSpec(name: "threads", value: "n", help: "Threads to use.", defaultValue: "\(Parallel.cores)"),
        OptionSpec(name: "json", value: nil, help: "Print {\"loss\", \"perplexity\", \"bits_per_byte\", \"tokens\", \"bytes\"}.", defaultValue: nil),
    ])

func runEval(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: evalSpec)
    guard let from = a.string("from") else { throw UsageError(message: "Missing expected argument '--from <file>'", command: a.spec) }
    guard a.positionals.count == 1 else {
        throw UsageError(message: a.positionals.isEmpty ? "Missing expected argument '<textfile>'" : "Unexpected argument '\(a.positionals[1])'", command: a.spec)
    }
    let threads = try a.int("threads", min: 1)
    Parallel.threads = threads
    BLAS.setThreads(threads)
    let ck = try Checkpoint.load(from)
    let tok = ck.tokenizer
    var path = a.positionals[0]
    var spooled: String?
    defer { if let spooled { unlink(spooled) } }
    if path == "-" { spooled = try Corpus.spoolStandardInput(into: NSTemporaryDirectory()); path = spooled! }
    var skipped = 0
    let data = try TokenData(encoding: [path], with: tok, cacheDirectory: NSTemporaryDirectory(), skipped: &skipped)
    let N = data.count
    guard N >= 2 else { throw GenError("\(a.positionals[0]) has \(N) token; eval needs at least 2") }
    let r = evaluate(ck.model, data)
    let loss = r.sum / Double(N - 1)
    let bpb = r.sum / log(2) / Double(data.sourceBytes)
    if a.has("json") {
        print("{\"loss\":\(loss),\"perplexity\":\(exp(loss)),\"bits_per_byte\":\(bpb),\"tokens\":\(N),\"bytes\":\(data.sourceBytes)}")
    } else {
        print(String(format: "loss %.4f nats/token, perplexity %.3f, %.4f bits/byte (%d tokens, %d bytes)", loss, exp(loss), bpb, N, data.sourceBytes))
    }
    return 0
}

/// Σ of -log p over all N-1 next-token predictions, in consecutive context-sized windows.
func evaluate(_ model: GPTModel, _ data: TokenData) -> (sum: Double, count: Int) {
    let T = model.config.blockSize
    let N = data.count
    let B = 8
    let acts = Activations(config: model.config, B: B, T: T, training: false)
    let x = TokenBuffer(count: B * T), y = TokenBuffer(count: B * T)
    var sum = 0.0, count = 0
    var start = 0
    while start < N - 1 {
        // A batch of full windows, or the last (shorter) one alone.
        let len = min(T, N - 1 - start)
        var b = 0
        if len == T {
            while b < B && start + T <= N - 1 {
                for t in 0..<T { x.pointer[b * T + t] = data[start + t]; y.pointer[b * T + t] = data[start + t + 1] }
                b += 1
                start += T
            }
            let mean = GPT.forward(model.views, model.config, acts, tokens: x.pointer, targets: y.pointer, B: b, t: T)
            sum += Double(mean) * Double(b * T)
            count += b * T
        } else {
            for t in 0..<len { x.pointer[t] = data[start + t]; y.pointer[t] = data[start + t + 1] }
            let mean = GPT.forward(model.views, model.config, acts, tokens: x.pointer, targets: y.pointer, B: 1, t: len)
            sum += Double(mean) * Double(len)
            count += len
            start += len
        }
    }
    return (sum, count)
}
