import GenKernels

/// A projection, GPT-2's `Conv1D`: out (M,N) = inp (M,K) · weight (K,N) + bias (N), plus, when
/// an adapter sits beside it, scaling · (inp·Aᵀ)·Bᵀ (LoRA, PEFT's layout: A (r,K), B (N,r)).
/// The four projections of a block are `Linear`s, so that what changes a projection (another
/// precision, an adapter) is made here once, for training, evaluation and decoding.
public struct Linear {
    let weight: UnsafeMutablePointer<Float>   // (K,N)
    let bias: UnsafeMutablePointer<Float>     // (N)
    let K: Int, N: Int
    var lora: LoRAWeights? = nil
    /// The weight in 8 bits (its fp32 values rounded to match, or absent: `Int8Matrix.dense`),
    /// read by single rows.
    var int8: Int8Matrix? = nil
    /// The weight is stored transposed, (N,K): one row per output, which a single input row
    /// streams (`GPTModel.arrangeForDecoding`). Such a projection has no backward pass.
    var rows = false

    public init(weight: UnsafeMutablePointer<Float>, bias: UnsafeMutablePointer<Float>, K: Int, N: Int,
                lora: LoRAWeights? = nil, int8: Int8Matrix? = nil, rows: Bool = false) {
        self.weight = weight
        self.bias = bias
        self.K = K
        self.N = N
        self.lora = lora
        self.int8 = int8
        self.rows = rows
    }

    /// inp (M,K) -> out (M,N). One row (decoding) streams the weights once (in the stored
    /// layout given `partials`, `Matmul.vectorPartials(N:)` floats); more rows go to sgemm. With
    /// an 8-bit copy, one row reads that instead. With an adapter, `u` (M,r) keeps
    /// scaling·(inp·Aᵀ) for the backward pass. With `dropout`, the adapter sees the dropped
    /// input, made in `dropped` (M,K).
    public func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, M: Int, u: UnsafeMutablePointer<Float>? = nil,
                        dropout: Dropout.Stream? = nil, dropped: UnsafeMutablePointer<Float>? = nil,
                        partials: UnsafeMutablePointer<Float>? = nil) {
        if M == 1, let int8 {
            Int8Blocks.vectorForward(out, inp, q: int8.q, scales: int8.scales, bias: bias, K: K, N: N)
        } else if let int8, let dense = int8.dense {
            // No fp32 weight was stored: rebuilt from the 8 bits, the values a rounded one holds.
            Int8Blocks.dequantize(columnsInto: dense, K: K, N: N, q: int8.q, scales: int8.scales)
            Matmul.forward(out, inp, dense, bias, M: M, K: K, N: N)
        } else if rows && M == 1 {
            Matmul.vectorForwardTransposed(out, inp, weight, bias, K: K, N: N)
        } else if rows {
            Matmul.forwardTransposed(out, inp, weight, bias, M: M, K: K, N: N)
        } else if M == 1, let partials {
            Matmul.vectorForward(out, inp, weight, bias, K: K, N: N, partials: partials)
        } else {
            Matmul.forward(out, inp, weight, bias, M: M, K: K, N: N)
        }
        guard let lora, let u else { return }
        var x = inp
        if let dropout, let dropped {
            Dropout.apply(dropped, inp, count: M * K, dropout)
            x = UnsafePointer(dropped)
        }
        // u (M,r) = scaling · x (M,K) · Aᵀ (K,r)
        Matmul.product(transA: false, transB: true, M: M, N: lora.r, K: K, alpha: lora.scaling, x, lda: K, lora.a, ldb: K, beta: 0, u, ldc: lora.r)
        // out (M,N) += u (M,r) · Bᵀ (r,N)
        Matmul.product(transA: false, transB: true, M: M, N: N, K: lora.r, u, lda: lora.r, lora.b, ldb: lora.r, beta: 1, out, ldc: N)
    }

    /// dout (M,N), inp (M,K) -> dinp (M,K) (overwritten; nil: not needed); the weight's and bias's gradients are
    /// added into `gradient` when there is one (a frozen projection has none), the adapter's into
    /// `loraGradient`. `u` is what `forward` kept; `scratch` holds (M,r); with `dropout` (the
    /// forward pass's), the dropped input is made again in `dropped` (M,K).
    public func backward(dinp: UnsafeMutablePointer<Float>?, gradient: Linear?, loraGradient: LoRAWeights? = nil,
                  dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, M: Int,
                  u: UnsafeMutablePointer<Float>? = nil, scratch: UnsafeMutablePointer<Float>? = nil,
                  dropout: Dropout.Stream? = nil, dropped: UnsafeMutablePointer<Float>? = nil) {
        precondition(!rows && int8?.dense == nil, "a model loaded for sampling only has no backward pass")
        Matmul.backward(dinp: dinp, dweight: gradient?.weight, dbias: gradient?.bias, dout: dout,
                        inp: inp, weight: weight, M: M, K: K, N: N)
        guard let lora, let u, let du = scratch else { return }
        let r = lora.r
        // dB (N,r) += doutᵀ (N,M) · u (M,r)
        if let g = loraGradient {
            Matmul.product(transA: true, transB: false, M: N, N: r, K: M, dout, lda: N, u, ldb: r, beta: 1, g.b, ldc: r)
        }
        // du (M,r) = scaling · dout (M,N) · B (N,r)
        Matmul.product(transA: false, transB: false, M: M, N: r, K: N, alpha: lora.scaling, dout, lda: N, lora.b, ldb: r, beta: 0, du, ldc: r)
        // dA (r,K) += duᵀ (r,M) · x (M,K), x the (dropped) input the adapter saw
        if let g = loraGradient {
            var x = inp
            if let dropout, let dropped {
                Dropout.apply(dropped, inp, count: M * K, dropout)
                x = UnsafePointer(dropped)
            }
            Matmul.product(transA: true, transB: false, M: r, N: K, K: M, du, lda: r, x, ldb: K, beta: 1, g.a, ldc: K)
        }
        guard let dinp else { return }
        if let dropout, let dropped {
            // dinp += (du · A) ⊙ mask, through `dropped`, which is no longer needed
            Matmul.product(transA: false, transB: false, M: M, N: K, K: r, du, lda: r, lora.a, ldb: K, beta: 0, dropped, ldc: K)
            Dropout.apply(dropped, dropped, count: M * K, dropout)
            Residual.forward(dinp, dinp, dropped, count: M * K)
            return
        }
        // dinp (M,K) += du (M,r) · A (r,K)
        Matmul.product(transA: false, transB: false, M: M, N: K, K: r, du, lda: r, lora.a, ldb: K, beta: 1, dinp, ldc: K)
    }
}
