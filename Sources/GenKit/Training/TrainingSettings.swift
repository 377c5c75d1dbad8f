import GenKernels
import FoundationEssentials
import Glibc

/// Optimisation settings of a training run (nanoGPT's names in comments).
public struct TrainingSettings: Codable, Sendable, Equatable {
    public var batchSize = 12            // batch_size
    public var accumulation = 1          // gradient_accumulation_steps
    public var steps = 2000              // max_iters (and lr_decay_iters)
    public var learningRate: Float = 1e-3
    public var minLearningRate: Float = 1e-4
    public var warmup = 100              // warmup_iters
    public var weightDecay: Float = 0.1
    public var beta1: Float = 0.9
    public var beta2: Float = 0.99
    public var eps: Float = 1e-8
    public var gradClip: Float = 1.0     // 0 turns clipping off
    public var dropout: Float = 0

    public init() {}

    /// Linear warmup, then cosine decay to the floor at the last step (nanoGPT's get_lr).
    public func learningRate(atStep it: Int) -> Float {
        if it < warmup { return learningRate * (Float(it) + 1) / (Float(warmup) + 1) }
        if it >= steps { return minLearningRate }
        let ratio = Double(it - warmup) / Double(max(1, steps - warmup))
        let coeff = 0.5 * (1 + cos(Double.pi * ratio))
        return minLearningRate + Float(coeff) * (learningRate - minLearningRate)
    }
}
