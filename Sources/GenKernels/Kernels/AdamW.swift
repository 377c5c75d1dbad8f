import CSystem
import Glibc

/// AdamW with decoupled weight decay, computed in the order PyTorch's `torch.optim.AdamW` does.
public enum AdamW {
    /// A stretch of a parameter buffer updated under one weight decay: floats
    /// offset..<offset+count of the parameters and gradients, stateOffset..<stateOffset+count of
    /// the moments. The runs of one update lie in the moments one after another from 0.
    public struct Run: Sendable, Equatable {
        public var offset, count, stateOffset: Int
        public var weightDecay: Float
        public init(offset: Int, count: Int, stateOffset: Int, weightDecay: Float) {
            self.offset = offset; self.count = count; self.stateOffset = stateOffset; self.weightDecay = weightDecay
        }
    }

    /// param (N), grad (N), m (N), v (N) updated in place; `step` counts from 1.
    public static func update(param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                              m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count n: Int,
                              lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float, step: Int) {
        withUnsafePointer(to: Run(offset: 0, count: n, stateOffset: 0, weightDecay: weightDecay)) { run in
            update(param: param, grad: grad, m: m, v: v, runs: UnsafeBufferPointer(start: run, count: 1),
                   lr: lr, beta1: beta1, beta2: beta2, eps: eps, step: step)
        }
    }

    /// Every run of `param` (and `grad`) updated in place with moments m and v, in one parallel
    /// region over the moments' floats (each float's update is the same wherever a thread's part
    /// begins or ends). `step` counts from 1.
    public static func update(param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                              m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, runs: UnsafeBufferPointer<Run>,
                              lr: Float, beta1: Float, beta2: Float, eps: Float, step: Int) {
        guard let last = runs.last else { return }
        let bc1 = 1 - Float(pow(Double(beta1), Double(step)))
        let bc2 = 1 - Float(pow(Double(beta2), Double(step)))
        let update = Update(param: param, grad: grad, m: m, v: v, beta1: beta1, beta2: beta2, eps: eps,
                            stepSize: lr / bc1, bc2Sqrt: bc2.squareRoot(), decay: 1)
        Parallel.forRanges(last.stateOffset + last.count, minimumPerThread: 8192, Runs(runs: runs, update: update, lr: lr))
    }

    /// `Update` over floats of the moments, each run's part with the run's decay and offset.
    struct Runs: RangeKernel {
        let runs: UnsafeBufferPointer<Run>
        let update: Update
        let lr: Float
        func run(_ range: Range<Int>) {
            for run in runs {
                let lo = max(range.lowerBound, run.stateOffset), hi = min(range.upperBound, run.stateOffset + run.count)
                if lo >= hi { continue }
                let shift = run.offset - run.stateOffset
                var u = update
                u.param = update.param + shift
                u.grad = update.grad + shift
                u.decay = 1 - lr * run.weightDecay
                u.run(lo..<hi)
            }
        }
    }

    /// AdamW on floats `range` of param, grad, m and v (param and grad shifted by the caller).
    struct Update: RangeKernel {
        var param: UnsafeMutablePointer<Float>
        var grad: UnsafePointer<Float>
        let m, v: UnsafeMutablePointer<Float>
        let beta1, beta2, eps, stepSize, bc2Sqrt: Float
        var decay: Float
        func run(_ range: Range<Int>) {
            let b1 = Float32x16(repeating: beta1), b2 = Float32x16(repeating: beta2)
            let ob1 = Float32x16(repeating: 1 - beta1), ob2 = Float32x16(repeating: 1 - beta2)
            var i = range.lowerBound
            while i + 16 <= range.upperBound {
                let g = load16(grad + i)
                let mi = b1 * load16(m + i) + ob1 * g
                let vi = b2 * load16(v + i) + ob2 * (g * g)
                store16(mi, m + i)
                store16(vi, v + i)
                let denom = gen_sqrt16(vi) / bc2Sqrt + eps
                store16(load16(param + i) * decay - stepSize * (mi / denom), param + i)
                i += 16
            }
            while i < range.upperBound {
                let g = grad[i]
                let mi = beta1 * m[i] + (1 - beta1) * g
                let vi = beta2 * v[i] + (1 - beta2) * (g * g)   // as the vector lanes, for the same bits
                m[i] = mi
                v[i] = vi
                let denom = vi.squareRoot() / bc2Sqrt + eps
                param[i] = param[i] * decay - stepSize * (mi / denom)
                i += 1
            }
        }
    }

    /// Σ x² over n floats, accumulated in Double for a stable global gradient norm.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count n: Int) -> Double {
        var total = 0.0
        var i = 0
        let chunk = 1 << 14
        while i < n {
            let end = min(n, i + chunk)
            var acc = Float32x16()
            var j = i
            while j + 16 <= end { let g = load16(x + j); acc = acc.addingProduct(g, g); j += 16 }
            var s = Double(acc.sum())
            while j < end { s += Double(x[j] * x[j]); j += 1 }
            total += s
            i = end
        }
        return total
    }

    /// x (N) *= s
    public static func scale(_ x: UnsafeMutablePointer<Float>, count n: Int, by s: Float) {
        Parallel.forRanges(n, minimumPerThread: 16384, Scale(x: x, s: s))
    }

    struct Scale: RangeKernel {
        let x: UnsafeMutablePointer<Float>
        let s: Float
        func run(_ range: Range<Int>) {
            let sv = Float32x16(repeating: s)
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(load16(x + i) * sv, x + i); i += 16 }
            while i < range.upperBound { x[i] *= s; i += 1 }
        }
    }
}
