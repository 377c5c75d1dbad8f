import GenKernels
import FoundationEssentials
import Glibc

/// A model's loss on a whole text, without gradients: `gen eval`.
///
/// The tokens x[0..N-1] are cut into consecutive windows of the context T: window k reads
/// x[kT ..< min(kT+T, N-1)] and predicts the token after each position.
public final class Evaluator {
    public let model: GPTModel
    let threads: Int
    let batch: TokenBatch
    let acts: Activations

    /// The loss of a text.
    public struct Result: Sendable, Equatable {
        /// Σ -ln p over all N-1 predictions.
        public var totalLoss: Double
        public var predictions: Int
        public var tokens: Int
        public var bytes: Int
        /// Mean cross-entropy in nats per token.
        public var loss: Double { totalLoss / Double(predictions) }
        public var perplexity: Double { exp(loss) }
        /// Total bits over the text's UTF-8 bytes (compares models with different tokenizers).
        public var bitsPerByte: Double { totalLoss / log(2) / Double(bytes) }
    }

    /// Rows of logits held: the output layer and the loss run this many positions at a time
    /// (GPT-2's vocabulary: 103 MB, not 1.6 GB for 8 windows of 1024).
    static let logitRows = 512

    /// - Parameter batchSize: windows evaluated together.
    /// - Throws: `GenError` when the activations would not fit in memory.
    public init(model: GPTModel, threads: Int = Parallel.cores, batchSize: Int = 8) throws {
        self.model = model
        self.threads = threads
        let T = model.config.blockSize
        try Machine.checkFits(Activations.bytes(config: model.config, B: batchSize, T: T, training: false, oneLayer: true,
                                                logitRows: Self.logitRows, loraRank: model.loraRank),
                              "evaluating a model with a context of \(T)")
        batch = TokenBatch(B: batchSize, T: T)
        acts = Activations(model: model, B: batchSize, T: T, training: false, oneLayer: true, logitRows: Self.logitRows)
    }

    /// - Throws: `GenError` when the text has fewer than 2 tokens.
    public func evaluate(_ data: TokenData) throws -> Result {
        let N = data.count
        guard N >= 2 else { throw GenError("the text has \(N) token; a loss needs at least 2") }
        let T = model.config.blockSize, B = batch.B
        var sum = 0.0, count = 0
        var start = 0
        Parallel.withThreads(threads) {
            while start < N - 1 {
                // A batch of full windows, or the last (shorter) one alone.
                let len = min(T, N - 1 - start)
                var rows = 0
                if len == T {
                    while rows < B && start + T <= N - 1 {
                        for t in 0..<T { batch.set(row: rows, position: t, input: data[start + t], target: data[start + t + 1]) }
                        rows += 1
                        start += T
                    }
                } else {
                    // The short window is packed at the front of row 0 (the rows are T apart).
                    for t in 0..<len { batch.inputs.pointer[t] = data[start + t]; batch.targets.pointer[t] = data[start + t + 1] }
                    rows = 1
                    start += len
                }
                let width = len == T ? T : len
                let mean = GPT.forward(model.views, model.config, acts, tokens: batch.inputs.pointer,
                                       targets: batch.targets.pointer, B: rows, t: width)
                sum += Double(mean) * Double(rows * width)
                count += rows * width
            }
        }
        return Result(totalLoss: sum, predictions: count, tokens: N, bytes: data.sourceBytes)
    }
}
