import GenKernels

/// One projection's weight in 8 bits, (N, rowBytes) bytes and (N, blocks) scales as
/// `Int8Blocks` lays them out; `dense` is where a batched pass rebuilds it in fp32 when the
/// model holds no fp32 copy (`Int8Weights.dense`).
public struct Int8Matrix {
    let q: UnsafePointer<Int8>
    let scales: UnsafePointer<Float>
    let dense: UnsafeMutablePointer<Float>?
}

/// A model's four projections per block and its token embeddings in 8 bits, for decoding
/// (`GPTModel.roundToInt8`, or read so from a file: `Checkpoint.load` with `.int8`).
/// LayerNorms, biases and position embeddings stay in fp32.
public final class Int8Weights {
    let bytes: ByteBuffer
    let scales: FloatBuffer
    /// Per layer, the byte and scale offsets of attn, proj, fc and fcproj; then the embeddings'.
    let offsets: [[(Int, Int)]]
    let wteOffset: (Int, Int)
    /// The largest projection's size in fp32 (K,N), where a batched pass (a prompt) rebuilds
    /// each projection from its 8 bits, for a model whose fp32 projections and embeddings were
    /// never stored; nil when they hold the rounded values themselves.
    let dense: FloatBuffer?

    /// Room for `config`'s weights in 8 bits (filled by `round` and `roundEmbeddings`), with
    /// `dense` when the model keeps no fp32 copy of them.
    init(config: GPTConfig, fp32Copy: Bool) {
        let C = config.nEmbd, H = config.hidden, V = config.vocabSize
        // (K, N) of attn, proj, fc, fcproj
        let shapes = [(C, 3 * C), (C, C), (C, H), (H, C)]
        var byteCount = 0, scaleCount = 0
        var offsets: [[(Int, Int)]] = []
        for _ in 0..<config.nLayer {
            var layer: [(Int, Int)] = []
            for (K, N) in shapes {
                layer.append((byteCount, scaleCount))
                byteCount += N * Int8Blocks.rowBytes(K: K)
                scaleCount += N * Int8Blocks.blocks(K: K)
            }
            offsets.append(layer)
        }
        wteOffset = (byteCount, scaleCount)
        byteCount += V * Int8Blocks.rowBytes(K: C)
        scaleCount += V * Int8Blocks.blocks(K: C)
        self.offsets = offsets
        bytes = ByteBuffer(count: byteCount)
        scales = FloatBuffer(count: scaleCount, hugePages: true)
        dense = fp32Copy ? nil : FloatBuffer(count: config.largestProjection)
    }

    /// Quantizes `views`' weights, writing the rounded values back into them.
    convenience init(_ views: ParameterViews, config: GPTConfig) {
        self.init(config: config, fp32Copy: true)
        for l in 0..<config.nLayer {
            let w = views.layer(l)
            for (i, linear) in [w.attn, w.proj, w.fc, w.fcproj].enumerated() {
                round(layer: l, i, columnsOf: linear.weight, K: linear.K, N: linear.N)
            }
        }
        roundEmbeddings(views.wte, C: config.nEmbd, V: config.vocabSize)
    }

    /// Rounds layer l's projection i, w (K,N), into its 8 bits, and the rounded values back into w.
    func round(layer l: Int, _ i: Int, columnsOf w: UnsafeMutablePointer<Float>, K: Int, N: Int) {
        let (b, s) = offsets[l][i]
        Int8Blocks.quantize(columnsOf: w, K: K, N: N, q: bytes.pointer + b, scales: scales.pointer + s)
    }

    /// Rounds layer l's projection i from its transpose w (N,K) into its 8 bits (the same
    /// bytes as from (K,N)); w is only read.
    func round(layer l: Int, _ i: Int, rowsOf w: UnsafeMutablePointer<Float>, K: Int, N: Int) {
        let (b, s) = offsets[l][i]
        Int8Blocks.quantize(rowsOf: w, K: K, N: N, q: bytes.pointer + b, scales: scales.pointer + s, roundingWeights: false)
    }

    /// Rounds the token embeddings (V,C) into their 8 bits; with `writingBack`, the rounded
    /// values go back into them, else they are only read.
    func roundEmbeddings(_ wte: UnsafeMutablePointer<Float>, C: Int, V: Int, writingBack: Bool = true) {
        Int8Blocks.quantize(rowsOf: wte, K: C, N: V, q: bytes.pointer + wteOffset.0, scales: scales.pointer + wteOffset.1,
                            roundingWeights: writingBack)
    }

    /// Whether the projections and the token embeddings are held in these 8 bits alone, with
    /// no fp32 copy (`GPTModel.int8Only`).
    var alone: Bool { dense != nil }

    /// Layer l's projection i (0 attn, 1 proj, 2 fc, 3 fcproj).
    func matrix(layer l: Int, _ i: Int) -> Int8Matrix {
        let (b, s) = offsets[l][i]
        return Int8Matrix(q: bytes.pointer + b, scales: scales.pointer + s, dense: dense?.pointer)
    }

    /// The token embeddings, (V, C), as the output layer reads them.
    var wte: Int8Matrix { Int8Matrix(q: bytes.pointer + wteOffset.0, scales: scales.pointer + wteOffset.1, dense: nil) }
}
