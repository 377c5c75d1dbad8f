import GenKernels

/// One projection's weight in 8 bits, (N, rowBytes) bytes and (N, blocks) scales as
/// `Int8Blocks` lays them out.
public struct Int8Matrix {
    let q: UnsafePointer<Int8>
    let scales: UnsafePointer<Float>
}

/// A model's four projections per block and its token embeddings in 8 bits, for decoding
/// (`GPTModel.roundToInt8`). LayerNorms, biases and position embeddings stay in fp32.
public final class Int8Weights {
    let bytes: ByteBuffer
    let scales: FloatBuffer
    /// Per layer, the byte and scale offsets of attn, proj, fc and fcproj; then the embeddings'.
    let offsets: [[(Int, Int)]]
    let wteOffset: (Int, Int)

    /// Quantizes `views`' weights, writing the rounded values back into them.
    init(_ views: ParameterViews, config: GPTConfig) {
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
        for l in 0..<config.nLayer {
            let w = views.layer(l)
            for (i, linear) in [w.attn, w.proj, w.fc, w.fcproj].enumerated() {
                let (b, s) = offsets[l][i]
                Int8Blocks.quantize(columnsOf: linear.weight, K: linear.K, N: linear.N, q: bytes.pointer + b, scales: scales.pointer + s)
            }
        }
        Int8Blocks.quantize(rowsOf: views.wte, K: C, N: V, q: bytes.pointer + wteOffset.0, scales: scales.pointer + wteOffset.1)
    }

    /// Layer l's projection i (0 attn, 1 proj, 2 fc, 3 fcproj).
    func matrix(layer l: Int, _ i: Int) -> Int8Matrix {
        let (b, s) = offsets[l][i]
        return Int8Matrix(q: bytes.pointer + b, scales: scales.pointer + s)
    }

    /// The token embeddings, (V, C), as the output layer reads them.
    var wte: Int8Matrix { Int8Matrix(q: bytes.pointer + wteOffset.0, scales: scales.pointer + wteOffset.1) }
}
