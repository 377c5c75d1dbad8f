import Foundation
import GenKit
import GenKernels
import Testing
import TestScratch

/// Max-norm relative difference: max|a - b| / max|b| (0 when both are zero).
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var diff: Float = 0, scale: Float = 0
    for i in 0..<a.count {
        diff = max(diff, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
    }
    return scale == 0 ? diff : diff / scale
}

/// Σ|q| over each block of each row of an 8-bit copy (N, blocks), counted from its bytes one
/// at a time: what `Int8Blocks.quantize(rowsOf:absSums:)` writes as it rounds.
func absoluteSums(q: [Int8], K: Int, N: Int) -> [Float] {
    let nb = Int8Blocks.blocks(K: K), stride = Int8Blocks.rowBytes(K: K)
    var sums = [Float](repeating: 0, count: N * nb)
    for n in 0..<N {
        for b in 0..<nb {
            var t = 0
            for i in (b * Int8Blocks.block)..<min(stride, (b + 1) * Int8Blocks.block) {
                t += abs(Int(UInt8(bitPattern: q[n * stride + i])) - 128)
            }
            sums[n * nb + b] = Float(t)
        }
    }
    return sums
}

/// The mask a dropout stream applies, entries 0..<n (the stream applied to ones).
func dropoutMask(_ stream: Dropout.Stream, count n: Int) -> [Float] {
    var mask = [Float](repeating: 1, count: n)
    mask.withUnsafeMutableBufferPointer { Dropout.apply($0.baseAddress!, $0.baseAddress!, count: n, stream) }
    return mask
}

func randomArray(_ n: Int, _ rng: inout Random, scale: Float = 1) -> [Float] {
    (0..<n).map { _ in Float(rng.nextNormal()) * scale }
}

func fixturePath(_ name: String) -> String {
    Bundle.module.path(forResource: name, ofType: "safetensors", inDirectory: "Fixtures")!
}

/// A model holding the weights stored in a fixture.
func loadModel(_ file: SafeTensorsFile, config: GPTConfig, prefix: String = "") throws -> GPTModel {
    let model = GPTModel(config: config)
    for t in model.layout.tensors {
        try file.copyFloats(prefix + t.name, into: model.parameters.pointer + t.offset, count: t.count)
    }
    return model
}

func fixtureConfig(_ file: SafeTensorsFile) throws -> GPTConfig {
    try JSONDecoder().decode(GPTConfig.self, from: Data(file.metadata["config"]!.utf8))
}

/// The gradient of Σ f(x)·r by central differences in x[i].
func numericGradient(_ x: inout [Float], _ i: Int, h: Float, _ loss: ([Float]) -> Double) -> Double {
    let saved = x[i]
    x[i] = saved + h
    let up = loss(x)
    x[i] = saved - h
    let down = loss(x)
    x[i] = saved
    return (up - down) / Double(2 * h)
}

func weightedSum(_ a: [Float], _ r: [Float]) -> Double {
    var s = 0.0
    for i in 0..<a.count { s += Double(a[i]) * Double(r[i]) }
    return s
}

/// A batch source that leaves the batch as the test filled it.
final class KeepBatch: BatchSource {
    func fill(_ batch: TokenBatch) {}
    var state: [UInt64] = [0, 0, 0, 0]
}

/// The full forward pass's logits at every position of `tokens` (one sequence), (T,V).
func fullLogits(_ model: GPTModel, _ tokens: [Int32]) -> [Float] {
    let c = model.config
    let acts = Activations(config: c, B: 1, T: tokens.count, training: false)
    GPT.forward(model.views, c, acts, tokens: tokens, targets: nil, B: 1, t: tokens.count)
    return Array(UnsafeBufferPointer(start: acts.logits, count: tokens.count * c.vocabSize))
}

/// Feeds `tokens` to a fresh decoder one by one, expecting at each position the logits
/// `full` (T,V) holds, within `tolerance`.
func expectDecoderMatches(_ model: GPTModel, _ tokens: [Int32], _ full: [Float], tolerance: Float = 1e-5) {
    let V = model.config.vocabSize
    let decoder = Decoder(model: model)
    for (t, tok) in tokens.enumerated() {
        decoder.feed(tok)
        let step = Array(UnsafeBufferPointer(start: decoder.logits, count: V))
        #expect(relativeError(step, Array(full[(t * V)..<((t + 1) * V)])) < tolerance, "position \(t)")
    }
}
