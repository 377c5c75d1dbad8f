import GenKernels
import FoundationEssentials
import Glibc

/// Hears what a `TrainingRun` does, and says when it should stop. Every method has a default
/// that does nothing (or never stops).
public protocol TrainingRunDelegate: AnyObject {
    func trainingRun(_ run: TrainingRun, finished report: TrainingRun.StepReport)
    func trainingRun(_ run: TrainingRun, validated loss: Float, atStep step: Int)
    func trainingRun(_ run: TrainingRun, saved path: String, atStep step: Int)
    /// Asked after every step: true finishes the step, saves and ends the run (`.stopped`).
    func trainingRunShouldStop(_ run: TrainingRun) -> Bool
}

extension TrainingRunDelegate {
    public func trainingRun(_ run: TrainingRun, finished report: TrainingRun.StepReport) {}
    public func trainingRun(_ run: TrainingRun, validated loss: Float, atStep step: Int) {}
    public func trainingRun(_ run: TrainingRun, saved path: String, atStep step: Int) {}
    public func trainingRunShouldStop(_ run: TrainingRun) -> Bool { false }
}

/// When and where a run writes its model and optimizer state. A run of a model with adapters
/// writes a PEFT adapter folder at `path` (adapter_config.json, adapter_model.safetensors, and
/// its optimizer state as training_state.safetensors); any other run writes a model file at
/// `path` and its state beside it (`path`.state).
public struct CheckpointPolicy {
    /// The model file, or the adapter folder.
    public var path: String
    /// Steps between checkpoints (0: only at the end, or when stopped).
    public var every: Int
    public var tokenizer: Tokenizer
    /// Written into every model file, with the run's own facts (step, losses, date, seed).
    public var metadata: [String: String]

    /// For an adapter run: what adapter_config.json names as the base model.
    public var baseModel: String?

    public init(path: String, every: Int, tokenizer: Tokenizer, metadata: [String: String] = [:], baseModel: String? = nil) {
        self.path = path
        self.every = every
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.baseModel = baseModel
    }

    /// The file whose save id the state must match: the model file, or adapter_model.safetensors.
    public var modelFile: String { baseModel == nil ? path : path + "/adapter_model.safetensors" }
    public var statePath: String { baseModel == nil ? path + ".state" : path + "/training_state.safetensors" }
}

/// A training run: the step loop over a `Trainer`, with batches from a `BatchSource`,
/// validation, checkpoints and reports to a delegate. The command line decides files and
/// prints; everything else about a run is here.
public final class TrainingRun {
    /// Options of a run besides the optimisation settings.
    public struct Options: Sendable {
        /// Steps between validation losses (0: only at the end).
        public var evalEvery = 250
        /// Batches averaged for a validation loss.
        public var evalBatches = 20
        /// Seeds initialisation-independent randomness: batches, validation draws, dropout.
        public var seed: UInt64 = 1337
        /// Threads for the run's kernels.
        public var threads = Parallel.cores
        public init() {}
    }

    /// What one finished step reports.
    public struct StepReport: Sendable {
        public var step: Int
        public var steps: Int
        public var loss: Float
        public var gradNorm: Float
        public var learningRate: Float
        /// This step's time.
        public var milliseconds: Double
        /// Tokens per second over the steps of this run so far (validation included).
        public var tokensPerSecond: Double
        public var elapsed: Double
        /// Seconds left at the average pace so far.
        public var remaining: Double
        /// The validation loss measured after this step, if one was.
        public var validationLoss: Float?
    }

    public enum Outcome: Sendable, Equatable {
        case finished
        /// The delegate asked to stop; the checkpoint holds this step.
        case stopped(step: Int)
    }

    public let trainer: Trainer
    public let source: BatchSource
    /// Makes the validation batches drawn after `step` (nil: no validation).
    public let validation: ((_ step: Int) -> BatchSource)?
    public let options: Options
    public let checkpoint: CheckpointPolicy?
    public weak var delegate: TrainingRunDelegate?

    public private(set) var lastLoss: Float = .nan
    public private(set) var lastValidationLoss: Float?
    /// The step of the last checkpoint written or resumed from.
    public private(set) var lastSavedStep: Int?

    public init(trainer: Trainer, source: BatchSource, validation: ((_ step: Int) -> BatchSource)? = nil,
                options: Options = Options(), checkpoint: CheckpointPolicy? = nil) {
        self.trainer = trainer
        self.source = source
        self.validation = validation
        self.options = options
        self.checkpoint = checkpoint
    }

    /// The usual run on a token stream: random windows of the first `trainTokens` tokens, and
    /// validation windows of the rest (when there are enough of them).
    public convenience init(model: GPTModel, settings: TrainingSettings, data: TokenData, trainTokens: Int,
                            options: Options = Options(), checkpoint: CheckpointPolicy? = nil,
                            trainable: TrainableSet? = nil) {
        let trainer = Trainer(model: model, settings: settings, seed: options.seed, trainable: trainable)
        let source = RandomWindows(data, range: 0..<trainTokens, seed: options.seed &+ 1)
        var validation: ((Int) -> BatchSource)?
        if data.count > trainTokens {
            let seed = options.seed
            validation = { step in RandomWindows(data, range: trainTokens..<data.count, seed: seed ^ 0xE7A1 ^ UInt64(step)) }
        }
        self.init(trainer: trainer, source: source, validation: validation, options: options, checkpoint: checkpoint)
    }

    /// Continues the run whose optimizer state `checkpoint.statePath` holds (the weights were
    /// loaded with the model): moments, step, generators.
    /// - Throws: `GenError` when the state is missing or damaged, when its batch size differs,
    ///   or when it has done all `settings.steps` already.
    /// - Parameter modelMetadata: the metadata of the model file the weights came from, which
    ///   names the save its state must come from.
    public func resume(modelMetadata: [String: String]) throws {
        guard let checkpoint else { throw GenError("this run has no checkpoint to resume from") }
        let statePath = try CheckpointPair.resolve(modelPath: checkpoint.modelFile, modelMetadata: modelMetadata, statePath: checkpoint.statePath)
        let state = try TrainingState.load(statePath, into: trainer)
        if state.settings.batchSize != trainer.settings.batchSize {
            throw GenError.usage("a batch of \(trainer.settings.batchSize) differs from the saved run's \(state.settings.batchSize)", setting: "batch")
        }
        if state.step >= trainer.settings.steps {
            throw GenError.usage("\(checkpoint.path) has already done \(state.step) steps; ask for more steps to train further", setting: "steps")
        }
        trainer.step = state.step
        source.state = state.dataRandom.words
        trainer.dropoutRandom = state.dropoutRandom
        lastSavedStep = state.step
        lastValidationLoss = modelMetadata["val_loss"].flatMap(Float.init)
    }

    /// The mean loss of `options.evalBatches` validation batches drawn for the current step.
    public func validationLoss() -> Float? {
        guard let validation else { return nil }
        return Parallel.withThreads(options.threads) {
            let batches = validation(trainer.step)
            var sum: Double = 0
            for _ in 0..<options.evalBatches { sum += Double(trainer.loss(from: batches)) }
            return Float(sum / Double(options.evalBatches))
        }
    }

    /// Runs steps until `settings.steps` or until the delegate asks to stop, validating and
    /// saving as the options say.
    /// - Throws: `GenError` when the loss diverges (the last checkpoint is left as it was) or a
    ///   checkpoint cannot be written.
    public func run() throws -> Outcome {
        try Parallel.withThreads(options.threads) { try loop() }
    }

    private func loop() throws -> Outcome {
        let s = trainer.settings
        let tokensPerStep = Double(s.batchSize) * Double(trainer.T) * Double(max(1, s.accumulation))
        let startStep = trainer.step
        let started = Date()
        while trainer.step < s.steps {
            let t0 = Date()
            let r = trainer.step(from: source)
            let ms = Date().timeIntervalSince(t0) * 1000
            guard r.loss.isFinite, r.gradNorm.isFinite else {
                let kept = lastSavedStep.map { "the last good checkpoint (step \($0)) is kept" + (checkpoint.map { " in \($0.path)" } ?? "") }
                    ?? "no checkpoint was written"
                throw GenError("the loss became \(r.loss.isNaN || r.gradNorm.isNaN ? "NaN" : "infinite") at step \(trainer.step); \(kept); try a lower learning rate")
            }
            lastLoss = r.loss
            let step = trainer.step
            var validated: Float?
            if validation != nil && ((options.evalEvery > 0 && step % options.evalEvery == 0) || step == s.steps) {
                validated = validationLoss()
                lastValidationLoss = validated
            }
            let elapsed = Date().timeIntervalSince(started)
            let pace = elapsed / Double(step - startStep)
            delegate?.trainingRun(self, finished: StepReport(
                step: step, steps: s.steps, loss: r.loss, gradNorm: r.gradNorm, learningRate: r.learningRate,
                milliseconds: ms, tokensPerSecond: tokensPerStep / pace, elapsed: elapsed,
                remaining: pace * Double(s.steps - step), validationLoss: validated))
            if let validated { delegate?.trainingRun(self, validated: validated, atStep: step) }
            let stop = delegate?.trainingRunShouldStop(self) ?? false
            if let checkpoint, step == s.steps || (checkpoint.every > 0 && step % checkpoint.every == 0) || stop {
                try save()
            }
            if stop { return .stopped(step: step) }
        }
        return .finished
    }

    /// Writes the model and its optimizer state now.
    /// - Throws: `GenError` when the weights are not finite (nothing is written) or a file
    ///   cannot be written.
    public func save() throws {
        guard let checkpoint else { return }
        let model = trainer.model
        let norm = AdamW.sumOfSquares(trainer.optimized.pointer, count: trainer.optimized.count)
        guard norm.isFinite else {
            let kept = lastSavedStep.map { "the last good checkpoint (step \($0)) is kept in \(checkpoint.path)" } ?? "nothing was written"
            throw GenError("the weights are no longer finite at step \(trainer.step); \(kept); try a lower learning rate")
        }
        var meta = checkpoint.metadata
        for k in ["format", "format_version", "config", "tokenizer"] { meta[k] = nil }
        meta["step"] = String(trainer.step)
        meta["train_loss"] = lastLoss.isFinite ? String(lastLoss) : nil
        meta["val_loss"] = lastValidationLoss.map { String($0) }
        meta["date"] = Date().formatted(.iso8601)
        meta["seed"] = String(options.seed)
        let state = TrainingState(step: trainer.step, dataRandom: Random(state: source.state),
                                  dropoutRandom: trainer.dropoutRandom, settings: trainer.settings,
                                  extra: ["seed": String(options.seed), "threads": String(options.threads)])
        try CheckpointPair.save(modelStep: trainer.step, state: state, trainer: trainer, statePath: checkpoint.statePath) { added in
            if let adapters = model.adapters, let base = checkpoint.baseModel {
                try adapters.writeConfig(folder: checkpoint.path, baseModel: base)
                return try adapters.prepareWeights(folder: checkpoint.path, metadata: added.merging(["gen_step": String(trainer.step)]) { a, _ in a })
            }
            return try Checkpoint(model: model, tokenizer: checkpoint.tokenizer, metadata: meta.merging(added) { _, b in b }).prepare(checkpoint.path)
        }
        lastSavedStep = trainer.step
        delegate?.trainingRun(self, saved: checkpoint.path, atStep: trainer.step)
    }
}
