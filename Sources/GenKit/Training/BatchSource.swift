import GenKernels

/// One micro-batch: B rows of T input tokens and the T tokens each should predict. A negative
/// target marks a position without a loss.
public final class TokenBatch {
    public let B: Int, T: Int
    public let inputs: TokenBuffer    // (B,T)
    public let targets: TokenBuffer   // (B,T)
    /// What each row is, as the source numbers it (a preference pair's index), or -1.
    public let ids: TokenBuffer       // (B)

    public init(B: Int, T: Int) {
        self.B = B
        self.T = T
        inputs = TokenBuffer(count: B * T)
        targets = TokenBuffer(count: B * T)
        ids = TokenBuffer(count: B)
        ids.pointer.update(repeating: -1, count: B)
    }

    /// Sets position t of row b.
    @inline(__always)
    public func set(row b: Int, position t: Int, input: Int32, target: Int32) {
        precondition(b >= 0 && b < B && t >= 0 && t < T)
        inputs.pointer[b * T + t] = input
        targets.pointer[b * T + t] = target
    }
}

/// Where a run's micro-batches come from. The one kind today draws random windows of a token
/// stream; a source of preference pairs or of another process's shard plugs in here.
public protocol BatchSource: AnyObject {
    /// Fills every row of `batch`.
    func fill(_ batch: TokenBatch)
    /// The source's position (its generator's state), saved with a checkpoint so that a resumed
    /// run draws the batches an uninterrupted one would.
    var state: [UInt64] { get set }
}

/// Random windows of `T + 1` consecutive tokens from a range of a token stream (nanoGPT's
/// get_batch): row b's inputs are x[s..<s+T], its targets x[s+1...s+T], s drawn uniformly.
public final class RandomWindows: BatchSource {
    let data: TokenData
    let range: Range<Int>
    public var random: Random

    /// - Precondition: the range holds more than T tokens for the batches it will fill.
    public init(_ data: TokenData, range: Range<Int>, seed: UInt64) {
        self.data = data
        self.range = range
        random = Random(seed: seed)
    }

    public func fill(_ batch: TokenBatch) {
        let T = batch.T
        precondition(range.count > T, "a window of \(T + 1) tokens does not fit in \(range.count)")
        for b in 0..<batch.B {
            let start = range.lowerBound + random.nextInt(below: range.count - T)
            for t in 0..<T {
                batch.set(row: b, position: t, input: data[start + t], target: data[start + t + 1])
            }
        }
    }

    public var state: [UInt64] {
        get { random.words }
        set { random = Random(state: newValue) }
    }
}
