import GenKernels
import CSystem
import FoundationEssentials
import Glibc
import Dispatch

/// Training steps on random tokens, timed, with the checks that a step allocates nothing:
/// `gen bench`.
public enum TrainingBenchmark {
    public struct Result: Sendable {
        /// Median time of the measured steps.
        public var millisecondsPerStep: Double
        public var tokensPerSecond: Double
        /// Model FLOPs per second: 6 per parameter per token plus attention (6·L·T·C).
        public var gflops: Double
        /// Bytes the C heap gained over the measured steps.
        public var heapGrowth: Int
        /// Bytes the resident set gained over them.
        public var residentGrowth: Int
        public var loss: Float
        public var parameters: Int
    }

    /// The most measured steps a run takes: each step's time is kept for the median.
    public static let maxSteps = 1_000_000

    /// Runs `warmup` steps, then `steps` measured ones (1 to `maxSteps`), after checking that
    /// the run fits in memory (`Machine.checkTrainingFits`). With MALLOC_TRACE set and
    /// libc_malloc_debug.so preloaded, every allocation made by the measured steps, on any
    /// thread, is written to that file.
    /// With `lora`, the model's weights are frozen and adapters of that config train.
    public static func run(config: GPTConfig, settings: TrainingSettings, steps: Int, warmup: Int, threads: Int,
                           lora: LoRAConfig? = nil) throws -> Result {
        guard (1...maxSteps).contains(steps) else {
            throw GenError.usage("steps must be from 1 to \(maxSteps), not \(steps)", setting: "steps")
        }
        guard warmup >= 0 else { throw GenError.usage("warmup steps must be 0 or more, not \(warmup)", setting: "warmup") }
        guard settings.batchSize >= 1 else {
            throw GenError.usage("the batch size must be 1 or more, not \(settings.batchSize)", setting: "batchSize")
        }
        try config.validate()   // before the adapters, which are laid out from the model's shape
        let adapters = try lora.map { try LoRAAdapters(config: $0, model: config) }
        try Machine.checkTrainingFits(config, settings, adapters: adapters)
        let model = GPTModel(config: config)
        model.initialize(seed: 0)
        if let adapters {
            adapters.initialize(seed: 1)
            model.adapters = adapters
        }
        let trainer = Trainer(model: model, settings: settings)
        let source = RandomTokens(vocabSize: config.vocabSize)
        var times = [Double](repeating: 0, count: steps)
        let tracing = ProcessInfo.processInfo.environment["MALLOC_TRACE"] != nil
        return Parallel.withThreads(threads) {
            for _ in 0..<warmup { _ = trainer.step(from: source) }
            // Read the resident size before the heap figure (reading it allocates), and after it below.
            let rss = Memory.residentBytes
            let heap = Memory.heapBytesInUse
            if tracing { mtrace() }
            var loss: Float = 0
            for i in 0..<steps {
                let t0 = DispatchTime.now().uptimeNanoseconds
                loss = trainer.step(from: source).loss
                times[i] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            }
            if tracing { muntrace() }
            let heapGrowth = Memory.heapBytesInUse - heap
            let rssGrowth = Memory.residentBytes - rss
            let ms = times.sorted()[steps / 2]
            let tps = Double(settings.batchSize * config.blockSize) / (ms / 1000)
            let flops = (6 * Double(model.parameterCount) + 6 * Double(config.nLayer * config.blockSize * config.nEmbd)) * tps
            return Result(millisecondsPerStep: ms, tokensPerSecond: tps, gflops: flops / 1e9, heapGrowth: heapGrowth,
                          residentGrowth: rssGrowth, loss: loss, parameters: model.parameterCount)
        }
    }

    /// Uniformly random inputs and targets.
    final class RandomTokens: BatchSource {
        let vocabSize: Int
        var random = Random(seed: 1)
        init(vocabSize: Int) { self.vocabSize = vocabSize }
        func fill(_ batch: TokenBatch) {
            for b in 0..<batch.B {
                for t in 0..<batch.T {
                    batch.set(row: b, position: t, input: Int32(random.nextInt(below: vocabSize)),
                              target: Int32(random.nextInt(below: vocabSize)))
                }
            }
        }
        var state: [UInt64] {
            get { random.words }
            set { random = Random(state: newValue) }
        }
    }
}
