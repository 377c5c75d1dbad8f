import CSystem

/// Inverted dropout: the kept values scaled by 1/(1-p).
public enum Dropout {
    /// A dropout mask that is never stored: entry i is 0 with probability p, else 1/(1-p),
    /// and depends on (key, i) alone (a counter-based generator, SplitMix64's output function),
    /// so it can be drawn in parts, on any number of threads, and drawn again in a backward pass.
    public struct Stream: Sendable {
        public let key: UInt64
        public let p: Float
        /// The integer form of `u < p` for u = x / 2^24, x a 24-bit draw: x < ⌈p·2^24⌉.
        let threshold: UInt32
        let keep: Float

        /// 0 <= p < 1.
        public init(key: UInt64, p: Float) {
            self.key = key
            self.p = p
            threshold = UInt32((Double(p) * 16_777_216).rounded(.up))
            keep = 1 / (1 - p)
        }

        /// x (n) *= entries first..<first+n.
        @inline(__always)
        public func scale(_ x: UnsafeMutablePointer<Float>, count n: Int, first: Int) {
            gen_dropout_scale(x, x, n, key, UInt64(first), threshold, keep)
        }
    }

    /// Inverted dropout: y (n) = x (n) ⊙ entries 0..<n of `stream`, over gen's threads (y may
    /// be x). The forward pass and the backward pass apply the same stream.
    public static func apply(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count n: Int, _ stream: Stream) {
        Parallel.forRanges(n, minimumPerThread: 16384, Apply(y: y, x: x, stream: stream))
    }

    struct Apply: RangeKernel {
        let y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>
        let stream: Stream
        func run(_ range: Range<Int>) {
            let lo = range.lowerBound
            gen_dropout_scale(y + lo, x + lo, range.count, stream.key, UInt64(lo), stream.threshold, stream.keep)
        }
    }
}
