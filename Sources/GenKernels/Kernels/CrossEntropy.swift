/// Softmax over the vocabulary fused with the cross-entropy loss.
public enum CrossEntropy {
    /// logits (M,V) -> probabilities (M,V) in place, losses (M) = -log p[target].
    /// A negative target marks a position without a loss (its loss is 0).
    public static func forward(losses: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>,
                               targets: UnsafePointer<Int32>, M: Int, V: Int) {
        Parallel.forRanges(M, minimumPerThread: 16, Forward(losses: losses, logits: logits, targets: targets, V: V))
    }

    struct Forward: RangeKernel {
        let losses, logits: UnsafeMutablePointer<Float>
        let targets: UnsafePointer<Int32>
        let V: Int
        func run(_ rows: Range<Int>) {
            for r in rows {
                let x = logits + r * V
                let tgt = Int(targets[r])
                let target = tgt >= 0 ? x[tgt] : 0
                let (m, logSum) = softmaxRow(x, V)
                losses[r] = tgt >= 0 ? logSum - (target - m) : 0
            }
        }
    }

    /// probabilities (M,V) -> dlogits (M,V) in place = (p - onehot(target)) * scale, times
    /// rowScales[r] (M) for row r when given (a loss that weighs positions differently).
    public static func backward(probabilities: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
                                scale: Float, rowScales: UnsafePointer<Float>? = nil, M: Int, V: Int) {
        Parallel.forRanges(M, minimumPerThread: 16, Backward(probabilities: probabilities, targets: targets, scale: scale, rowScales: rowScales, V: V))
    }

    struct Backward: RangeKernel {
        let probabilities: UnsafeMutablePointer<Float>
        let targets: UnsafePointer<Int32>
        let scale: Float
        let rowScales: UnsafePointer<Float>?
        let V: Int
        func run(_ rows: Range<Int>) {
            for r in rows {
                let p = probabilities + r * V
                let tgt = Int(targets[r])
                let scale = self.scale * (rowScales?[r] ?? 1)
                if tgt < 0 || scale == 0 { p.update(repeating: 0, count: V); continue }
                let sv = Float32x16(repeating: scale)
                var i = 0
                while i + 16 <= V { store16(load16(p + i) * sv, p + i); i += 16 }
                while i < V { p[i] *= scale; i += 1 }
                p[tgt] -= scale
            }
        }
    }
}
