import FoundationEssentials
import Glibc
import GenKit

/// `gen bench`: training steps on random tokens, through `TrainingBenchmark`.
struct BenchOptions {
    static let spec = CommandSpec(
        name: "bench",
        abstract: "Measure training throughput on random tokens (and check that steps allocate nothing).",
        discussion: "Prints the median time of the measured steps; heap_growth is the bytes the C heap gained over them.",
        options: [
            OptionSpec(name: "layers", value: "n", help: "Transformer blocks.", defaultValue: "4"),
            OptionSpec(name: "heads", value: "n", help: "Attention heads.", defaultValue: "4"),
            OptionSpec(name: "embd", value: "n", help: "Embedding width.", defaultValue: "128"),
            OptionSpec(name: "context", value: "n", help: "Context length.", defaultValue: "64"),
            OptionSpec(name: "vocab", value: "n", help: "Vocabulary size.", defaultValue: "65"),
            OptionSpec(name: "batch", value: "n", help: "Sequences per step.", defaultValue: "12"),
            OptionSpec(name: "steps", value: "n", help: "Measured steps.", defaultValue: "20"),
            OptionSpec(name: "warmup", value: "n", help: "Steps run before measuring.", defaultValue: "3"),
            OptionSpec(name: "dropout", value: "p", help: "Dropout.", defaultValue: "0"),
            OptionSpec(name: "lora", value: "r", help: "Train LoRA adapters of this rank on all four projections (the weights frozen)."),
            OptionSpec(name: "lora-dropout", value: "p", help: "Dropout on the adapters' input (with --lora).", defaultValue: "0"),
            threadsOption,
            OptionSpec(name: "json", value: nil, help: "Print one JSON object."),
        ])

    var config: GPTConfig
    var settings = TrainingSettings()
    var steps: Int, warmup: Int, threads: Int
    var json: Bool
    var lora: LoRAConfig?

    init(_ a: ParsedArguments) throws {
        config = GPTConfig(nLayer: try a.int("layers", min: 1), nHead: try a.int("heads", min: 1), nEmbd: try a.int("embd", min: 1),
                           blockSize: try a.int("context", min: 1), vocabSize: try a.int("vocab", min: 1, max: 1 << 22))
        try config.validate()
        settings.batchSize = try a.int("batch", min: 1)
        settings.dropout = try a.float("dropout", min: 0, max: 0.95)
        steps = try a.int("steps", min: 1, max: TrainingBenchmark.maxSteps)   // each step's time is kept for the median
        warmup = try a.int("warmup", min: 0)
        threads = try threadCount(a)
        json = a.has("json")
        if a.has("lora") { let r = try a.int("lora", min: 1, max: LoRAConfig.maxRank); lora = LoRAConfig(rank: r, alpha: Float(2 * r), dropout: try a.float("lora-dropout", min: 0, max: 0.95)) }
    }

    func run() throws -> Int32 {
        let r = try TrainingBenchmark.run(config: config, settings: settings, steps: steps, warmup: warmup, threads: threads, lora: lora)
        if json {
            try Output.line("{\"ms_per_step\":\(cFormat("%.3f", r.millisecondsPerStep)),\"tokens_per_s\":\(cFormat("%.1f", r.tokensPerSecond)),\"gflops\":\(cFormat("%.1f", r.gflops)),\"heap_growth\":\(r.heapGrowth),\"rss_growth\":\(r.residentGrowth),\"loss\":\(r.loss),\"threads\":\(threads),\"blas_core\":\(jsonString(Machine.matrixKernel)),\"own_products\":\(Machine.ownMatrixProducts),\"parameters\":\(r.parameters)}")
        } else {
            try Output.line(cFormat("%.2f ms/step, %.0f tokens/s, %.1f GFLOP/s (model FLOPs)", r.millisecondsPerStep, r.tokensPerSecond, r.gflops)
                            + ", heap growth \(r.heapGrowth) bytes, \(threads) threads, matrix products \(Machine.matrixProducts)")
        }
        return 0
    }
}
