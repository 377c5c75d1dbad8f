import Foundation
import GenKit
import CSystem

let benchSpec = CommandSpec(
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
        OptionSpec(name: "threads", value: "n", help: "Threads to use.", defaultValue: "\(Parallel.cores)"),
        OptionSpec(name: "json", value: nil, help: "Print one JSON object.", defaultValue: nil),
    ])

func runBench(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: benchSpec)
    let config = GPTConfig(nLayer: try a.int("layers", min: 1), nHead: try a.int("heads", min: 1), nEmbd: try a.int("embd", min: 1),
                           blockSize: try a.int("context", min: 1), vocabSize: try a.int("vocab", min: 1))
    if let p = config.problem { throw GenError(p) }
    let threads = try a.int("threads", min: 1)
    Parallel.threads = threads
    BLAS.setThreads(threads)
    var s = TrainingSettings()
    s.batchSize = try a.int("batch", min: 1)
    s.dropout = try a.float("dropout", min: 0, max: 0.95)
    let steps = try a.int("steps", min: 1), warmup = try a.int("warmup", min: 0)
    let model = GPTModel(config: config)
    model.initialize(seed: 0)
    var times = [Double](repeating: 0, count: steps)
    let trainer = Trainer(model: model, settings: s)
    var rng = Random(seed: 1)
    let n = s.batchSize * config.blockSize
    func fill(_ x: UnsafeMutablePointer<Int32>, _ y: UnsafeMutablePointer<Int32>) {
        for i in 0..<n { x[i] = Int32(rng.nextInt(below: config.vocabSize)); y[i] = Int32(rng.nextInt(below: config.vocabSize)) }
    }
    for _ in 0..<warmup {
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = trainer.step(fill: fill)
        times[0] = Double(DispatchTime.now().uptimeNanoseconds - t0)
    }
    // Read the resident size before the heap figure (reading it allocates), and after it below.
    let rss = Memory.residentBytes
    let heap = Memory.heapBytesInUse
    // With MALLOC_TRACE set and libc_malloc_debug.so preloaded, every allocation made by the
    // measured steps, on any thread, is written to that file.
    let tracing = ProcessInfo.processInfo.environment["MALLOC_TRACE"] != nil
    if tracing { mtrace() }
    var loss: Float = 0
    for i in 0..<steps {
        let t0 = DispatchTime.now().uptimeNanoseconds
        loss = trainer.step(fill: fill).loss
        times[i] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
    }
    if tracing { muntrace() }
    let heapGrowth = Memory.heapBytesInUse - heap
    let rssGrowth = Memory.residentBytes - rss
    let ms = times.sorted()[steps / 2]
    let tps = Double(n) / (ms / 1000)
    // Model FLOPs per token: 6 per parameter plus attention (6·L·T·C, causal half of 12).
    let flops = (6 * Double(model.parameterCount) + 6 * Double(config.nLayer * config.blockSize * config.nEmbd)) * tps
    if a.has("json") {
        print("{\"ms_per_step\":\(String(format: "%.3f", ms)),\"tokens_per_s\":\(String(format: "%.1f", tps)),\"gflops\":\(String(format: "%.1f", flops / 1e9)),\"heap_growth\":\(heapGrowth),\"rss_growth\":\(rssGrowth),\"loss\":\(loss),\"threads\":\(threads),\"blas_core\":\(jsonString(BLAS.coreName)),\"parameters\":\(model.parameterCount)}")
    } else {
        print(String(format: "%.2f ms/step, %.0f tokens/s, %.1f GFLOP/s (model FLOPs)", ms, tps, flops / 1e9)
              + ", heap growth \(heapGrowth) bytes, \(threads) threads, OpenBLAS \(BLAS.coreName)")
    }
    return 0
}
