import GenKernels

/// A projection, GPT-2's `Conv1D`: out (M,N) = inp (M,K) · weight (K,N) + bias (N).
/// The four projections of a block are `Linear`s, so that what changes a projection (another
/// precision, an adapter beside it) is made here once, for training, evaluation and decoding.
public struct Linear {
    let weight: UnsafeMutablePointer<Float>   // (K,N)
    let bias: UnsafeMutablePointer<Float>     // (N)
    let K: Int, N: Int

    /// inp (M,K) -> out (M,N). One row (decoding) streams the weights once; more rows go to sgemm.
    func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, M: Int) {
        if M == 1 {
            Matmul.vectorForward(out, inp, weight, bias, K: K, N: N)
        } else {
            Matmul.forward(out, inp, weight, bias, M: M, K: K, N: N)
        }
    }

    /// dout (M,N), inp (M,K) -> dinp (M,K) (overwritten); the weight's and bias's gradients are
    /// added into `gradient`, when there is one (a frozen projection has none).
    func backward(dinp: UnsafeMutablePointer<Float>, gradient: Linear?, dout: UnsafePointer<Float>,
                  inp: UnsafePointer<Float>, M: Int) {
        Matmul.backward(dinp: dinp, dweight: gradient?.weight, dbias: gradient?.bias, dout: dout,
                        inp: inp, weight: weight, M: M, K: K, N: N)
    }
}
