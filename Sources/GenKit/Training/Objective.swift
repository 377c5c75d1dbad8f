import GenKernels

/// Where a backward pass adds its gradients: the base weights' (nil when they are frozen) and
/// the adapters' (when the model has adapters being trained).
public struct GradientViews {
    public var base: ParameterViews?
    public var lora: LoRAViews?
}

/// What a run minimises. Today next-token cross-entropy; a loss over pairs of sequences
/// (per-sequence log-probabilities, per-position weights) is another conformance.
public protocol TrainingObjective: AnyObject {
    /// Forward and backward over `batch`, adding the gradient of (loss / microBatches) into
    /// `gradients`. Returns the batch's loss.
    func accumulate(_ model: GPTModel, _ acts: Activations, _ batch: TokenBatch,
                    gradients: GradientViews, microBatches: Int) -> Float
    /// The batch's loss, forward only.
    func loss(_ model: GPTModel, _ acts: Activations, _ batch: TokenBatch) -> Float
}

/// Mean next-token cross-entropy over every position of the batch (nanoGPT's loss).
public final class NextTokenLoss: TrainingObjective {
    public init() {}

    public func accumulate(_ model: GPTModel, _ acts: Activations, _ batch: TokenBatch,
                           gradients: GradientViews, microBatches: Int) -> Float {
        let B = batch.B, T = batch.T
        let loss = GPT.forward(model.views, model.config, acts, tokens: batch.inputs.pointer,
                               targets: batch.targets.pointer, B: B, t: T)
        GPT.backward(model.views, gradients.base, lora: gradients.lora, model.config, acts, tokens: batch.inputs.pointer,
                     targets: batch.targets.pointer, B: B, t: T, lossScale: 1 / Float(Double(B) * Double(T) * Double(microBatches)))   // the count in Double: exact, and no overflow
        return loss
    }

    public func loss(_ model: GPTModel, _ acts: Activations, _ batch: TokenBatch) -> Float {
        GPT.forward(model.views, model.config, acts, tokens: batch.inputs.pointer,
                    targets: batch.targets.pointer, B: batch.B, t: batch.T)
    }
}
