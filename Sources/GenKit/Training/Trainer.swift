import GenKernels

/// Everything an optimizer step needs besides the weights: gradients, AdamW moments,
/// activations and the micro-batch, each one allocation made here, before the first step.
/// A model with adapters trains its adapters only: the base weights are frozen and get no
/// gradient buffer.
public final class Trainer {
    public let model: GPTModel
    public var settings: TrainingSettings
    public let T: Int
    /// What trains: AdamW moments exist for these floats only.
    public let trainable: TrainableSet
    /// What the steps minimise.
    public let objective: TrainingObjective
    /// The floats AdamW updates: the model's parameters, or its adapters'.
    public let optimized: FloatBuffer
    public let gradients: FloatBuffer
    public let m: FloatBuffer
    public let v: FloatBuffer
    let grads: GradientViews
    public let activations: Activations
    /// The micro-batch being trained on.
    public let batch: TokenBatch
    /// Optimizer steps done.
    public var step = 0
    /// Draws dropout masks.
    public var dropoutRandom: Random
    /// Called with the accumulated gradients of each step, before clipping: where gradients
    /// from other processes would be summed in.
    public var gradientHook: ((FloatBuffer) -> Void)?
    /// `trainable`'s runs as AdamW takes them, their weight decay set from `settings` each step.
    private var adamRuns: [AdamW.Run]

    public init(model: GPTModel, settings: TrainingSettings, context: Int? = nil, seed: UInt64 = 0,
                trainable: TrainableSet? = nil, objective: TrainingObjective = NextTokenLoss()) {
        precondition(!model.samplingOnly, "a model loaded for sampling only is not trained")
        self.model = model
        self.settings = settings
        self.T = context ?? model.config.blockSize
        precondition(T <= model.config.blockSize)
        self.objective = objective
        if let adapters = model.adapters {
            optimized = adapters.parameters
            self.trainable = trainable ?? TrainableSet(adapters)
            gradients = FloatBuffer(count: adapters.parameters.count, hugePages: true)
            grads = GradientViews(base: nil, lora: adapters.views(gradients.pointer))
        } else {
            optimized = model.parameters
            self.trainable = trainable ?? .all(model.layout)
            gradients = FloatBuffer(count: model.layout.count, hugePages: true)
            grads = GradientViews(base: ParameterViews(gradients.pointer, model.layout), lora: nil)
        }
        m = FloatBuffer(count: self.trainable.count, hugePages: true)
        v = FloatBuffer(count: self.trainable.count, hugePages: true)
        activations = Activations(model: model, B: settings.batchSize, T: T, training: true)
        batch = TokenBatch(B: settings.batchSize, T: T)
        dropoutRandom = Random(seed: seed ^ 0x5EED_D20B)
        adamRuns = self.trainable.runs.map { AdamW.Run(offset: $0.offset, count: $0.count, stateOffset: $0.stateOffset, weightDecay: 0) }
    }

    /// Result of one optimizer step.
    public struct StepResult: Sendable {
        public var loss: Float
        public var gradNorm: Float
        public var learningRate: Float
    }

    /// Forward and backward over the micro-batch already in `batch`, adding its gradients
    /// scaled for a mean over `microBatches`. Returns the micro-batch's loss.
    public func accumulateGradients(microBatches: Int) -> Float {
        if settings.dropout > 0 { drawDropoutKeys() }
        if let p = model.adapters?.config.dropout, p > 0 { drawAdapterDropoutKeys(p) }
        return objective.accumulate(model, activations, batch, gradients: grads, microBatches: microBatches)
    }

    /// One optimizer step: `settings.accumulation` micro-batches drawn from `source`, the
    /// gradient hook, clipping, then AdamW at the scheduled learning rate.
    public func step(from source: BatchSource) -> StepResult {
        gradients.zero()
        var loss: Float = 0
        let k = max(1, settings.accumulation)
        for _ in 0..<k {
            source.fill(batch)
            loss += accumulateGradients(microBatches: k)
        }
        loss /= Float(k)
        gradientHook?(gradients)
        let lr = settings.learningRate(atStep: step)
        let norm = clipGradients()
        applyAdamW(lr: lr)
        return StepResult(loss: loss, gradNorm: norm, learningRate: lr)
    }

    /// The loss of the micro-batch `source` fills next, without gradients.
    public func loss(from source: BatchSource) -> Float {
        source.fill(batch)
        return objective.loss(model, activations, batch)
    }

    /// Scales the trained gradients so that their global norm is at most `gradClip` (as
    /// PyTorch's clip_grad_norm_). Returns the norm before clipping.
    @discardableResult
    public func clipGradients() -> Float {
        var sum: Double = 0
        for s in trainable.spans { sum += AdamW.sumOfSquares(gradients.pointer + s.lowerBound, count: s.count) }
        let norm = Float(sum.squareRoot())
        if settings.gradClip > 0 {
            let coef = settings.gradClip / (norm + 1e-6)
            if coef < 1 {
                for s in trainable.spans { AdamW.scale(gradients.pointer + s.lowerBound, count: s.count, by: coef) }
            }
        }
        return norm
    }

    /// One AdamW update of every trained parameter from the current gradients.
    public func applyAdamW(lr: Float) {
        step += 1
        for i in adamRuns.indices { adamRuns[i].weightDecay = trainable.runs[i].decays ? settings.weightDecay : 0 }
        adamRuns.withUnsafeBufferPointer { runs in
            AdamW.update(param: optimized.pointer, grad: gradients.pointer, m: m.pointer, v: v.pointer, runs: runs,
                         lr: lr, beta1: settings.beta1, beta2: settings.beta2, eps: settings.eps, step: step)
        }
    }

    /// Keys of the adapters' input dropout (PEFT's lora_dropout), for every projection: the
    /// masks are drawn where they are applied (`Activations.dropoutKeys`).
    func drawAdapterDropoutKeys(_ p: Float) {
        guard activations.loraDropped != nil else { return }
        for l in 0..<model.config.nLayer {
            for i in 4..<8 { activations.dropoutKeys[i + 7 * l] = dropoutRandom.next() }
        }
        activations.adapterDropout = p
    }

    /// Keys of the embeddings', the attention weights' and the residual branches' dropout.
    func drawDropoutKeys() {
        activations.dropoutKeys[0] = dropoutRandom.next()
        for l in 0..<model.config.nLayer {
            for i in 1..<4 { activations.dropoutKeys[i + 7 * l] = dropoutRandom.next() }
        }
        activations.dropout = settings.dropout
    }
}
