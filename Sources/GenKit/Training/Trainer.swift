/// Everything a training run needs besides the weights: gradients, Adam moments, activations
/// and batch buffers, each one allocation made here, before the first step.
public final class Trainer {
    public let model: GPTModel
    public var settings: TrainingSettings
    public let T: Int
    public let gradients: FloatBuffer
    public let m: FloatBuffer
    public let v: FloatBuffer
    let grads: ParameterViews
    public let activations: Activations
    /// One micro-batch: inputs (B,T) and targets (B,T).
    public let inputs: TokenBuffer
    public let targets: TokenBuffer
    /// Optimizer steps done.
    public var step = 0
    /// Draws dropout masks.
    public var dropoutRandom: Random
    /// Contiguous runs of the parameter buffer with the same weight-decay rule.
    let runs: [(offset: Int, count: Int, decays: Bool)]

    public init(model: GPTModel, settings: TrainingSettings, context: Int? = nil, seed: UInt64 = 0) {
        self.model = model
        self.settings = settings
        self.T = context ?? model.config.blockSize
        precondition(T <= model.config.blockSize)
        let n = model.layout.count
        gradients = FloatBuffer(count: n, hugePages: true)
        m = FloatBuffer(count: n, hugePages: true)
        v = FloatBuffer(count: n, hugePages: true)
        grads = ParameterViews(gradients.pointer, model.layout)
        activations = Activations(config: model.config, B: settings.batchSize, T: T, training: true,
                                  dropout: settings.dropout > 0)
        inputs = TokenBuffer(count: settings.batchSize * T)
        targets = TokenBuffer(count: settings.batchSize * T)
        dropoutRandom = Random(seed: seed ^ 0x5EED_D20B)
        var runs: [(offset: Int, count: Int, decays: Bool)] = []
        for t in model.layout.tensors.sorted(by: { $0.offset < $1.offset }) {
            if let last = runs.last, last.decays == t.decays, last.offset + last.count == t.offset {
                runs[runs.count - 1].count += t.count
            } else {
                runs.append((t.offset, t.count, t.decays))
            }
        }
        self.runs = runs
    }

    /// Result of one optimizer step.
    public struct StepResult: Sendable {
        public var loss: Float
        public var gradNorm: Float
        public var learningRate: Float
    }

    /// Forward and backward over one micro-batch already in `inputs`/`targets`, adding
    /// gradients scaled by `1/(positions · micro-batches)`. Returns the micro-batch's loss.
    public func accumulateGradients(microBatches: Int) -> Float {
        let B = settings.batchSize
        if settings.dropout > 0 { drawDropoutMasks() }
        let loss = GPT.forward(model.views, model.config, activations, tokens: inputs.pointer,
                               targets: targets.pointer, B: B, t: T)
        GPT.backward(model.views, grads, model.config, activations, tokens: inputs.pointer,
                     targets: targets.pointer, B: B, t: T,
                     lossScale: 1 / Float(B * T * microBatches))
        return loss
    }

    /// One optimizer step: `settings.accumulation` micro-batches, each filled by `fill(inputs,
    /// targets)`, then gradient clipping and AdamW at the scheduled learning rate.
    public func step(fill: (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Void) -> StepResult {
        gradients.zero()
        var loss: Float = 0
        let k = max(1, settings.accumulation)
        for _ in 0..<k {
            fill(inputs.pointer, targets.pointer)
            loss += accumulateGradients(microBatches: k)
        }
        loss /= Float(k)
        let lr = settings.learningRate(atStep: step)
        let norm = clipGradients()
        applyAdamW(lr: lr)
        return StepResult(loss: loss, gradNorm: norm, learningRate: lr)
    }

    /// Scales the gradients so that their global norm is at most `gradClip` (as PyTorch's
    /// clip_grad_norm_). Returns the norm before clipping.
    @discardableResult
    public func clipGradients() -> Float {
        let norm = Float(AdamW.sumOfSquares(gradients.pointer, count: gradients.count).squareRoot())
        if settings.gradClip > 0 {
            let coef = settings.gradClip / (norm + 1e-6)
            if coef < 1 { AdamW.scale(gradients.pointer, count: gradients.count, by: coef) }
        }
        return norm
    }

    /// One AdamW update of every parameter from the current gradients.
    public func applyAdamW(lr: Float) {
        step += 1
        for run in runs {
            AdamW.update(param: model.parameters.pointer + run.offset, grad: gradients.pointer + run.offset,
                         m: m.pointer + run.offset, v: v.pointer + run.offset, count: run.count,
                         lr: lr, beta1: settings.beta1, beta2: settings.beta2, eps: settings.eps,
                         weightDecay: run.decays ? settings.weightDecay : 0, step: step)
        }
    }

    func drawDropoutMasks() {
        let p = settings.dropout
        let keep = 1 / (1 - p)
        let M = settings.batchSize * T, C = model.config.nEmbd, L = model.config.nLayer
        func fill(_ mask: UnsafeMutablePointer<Float>, _ n: Int) {
            for i in 0..<n { mask[i] = dropoutRandom.nextFloat() < p ? 0 : keep }
        }
        let NH = model.config.nHead, B = settings.batchSize
        let attStride = activations.B * NH * activations.T * activations.T
        fill(activations.embMask!, M * C)
        for l in 0..<L {
            fill(activations.attprojMask! + l * activations.B * activations.T * C, M * C)
            fill(activations.fcprojMask! + l * activations.B * activations.T * C, M * C)
            // Attention weights: only the causal entries t2 <= t of each row are read.
            let att = activations.attMask! + l * attStride
            for row in 0..<(B * NH * T) {
                let t = row % T
                fill(att + row * T, t + 1)
            }
        }
    }
}
