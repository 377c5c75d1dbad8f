/// Causal multi-head self-attention on a fused qkv tensor. Each query row attends to keys
/// 0...t only: the masked upper half is never computed.
public enum Attention {
    /// qkv (B,T,3C), mask (B,NH,T,T) or nil -> out (B,T,C), att (B,NH,T,T) softmax probabilities
    /// (only entries t2 <= t are written). With a dropout mask (0 or 1/(1-p)) the output uses
    /// the probabilities times the mask; `att` keeps them unmasked.
    public static func forward(_ out: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, mask: UnsafePointer<Float>? = nil,
                               B: Int, T: Int, C: Int, NH: Int) {
        let hs = C / NH
        let scale = 1 / Float(hs).squareRoot()
        let C3 = 3 * C
        Parallel.forRanges(B * NH, Forward(out: out, att: att, qkv: qkv, mask: mask, T: T, C: C, NH: NH, hs: hs, scale: scale, C3: C3))
    }

    struct Forward: RangeKernel {
        let out, att: UnsafeMutablePointer<Float>
        let qkv: UnsafePointer<Float>
        let mask: UnsafePointer<Float>?
        let T, C, NH, hs: Int
        let scale: Float
        let C3: Int
        func run(_ pairs: Range<Int>) {
            for bh in pairs {
                let b = bh / NH, h = bh % NH
                let base = qkv + b * T * C3 + h * hs
                for t in 0..<T {
                    let q = base + t * C3
                    let row = att + (bh * T + t) * T
                    for t2 in 0...t { row[t2] = dot(q, base + t2 * C3 + C, hs) * scale }
                    softmaxRow(row, t + 1)
                    let o = out + (b * T + t) * C + h * hs
                    o.update(repeating: 0, count: hs)
                    if let mask {
                        let m = mask + (bh * T + t) * T
                        for t2 in 0...t where m[t2] != 0 { axpy(row[t2] * m[t2], base + t2 * C3 + 2 * C, o, hs) }
                    } else {
                        for t2 in 0...t { axpy(row[t2], base + t2 * C3 + 2 * C, o, hs) }
                    }
                }
            }
        }
    }

    /// dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T), mask (B,NH,T,T) or nil -> dqkv (B,T,3C) overwritten.
    /// scratch holds B*NH*T floats.
    public static func backward(dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                qkv: UnsafePointer<Float>, att: UnsafePointer<Float>, mask: UnsafePointer<Float>? = nil,
                                scratch: UnsafeMutablePointer<Float>, B: Int, T: Int, C: Int, NH: Int) {
        let hs = C / NH
        let scale = 1 / Float(hs).squareRoot()
        let C3 = 3 * C
        Parallel.forRanges(B * NH, Backward(dqkv: dqkv, dout: dout, qkv: qkv, att: att, mask: mask, scratch: scratch, T: T, C: C, NH: NH, hs: hs, scale: scale, C3: C3))
    }

    struct Backward: RangeKernel {
        let dqkv: UnsafeMutablePointer<Float>
        let dout, qkv, att: UnsafePointer<Float>
        let mask: UnsafePointer<Float>?
        let scratch: UnsafeMutablePointer<Float>
        let T, C, NH, hs: Int
        let scale: Float
        let C3: Int
        func run(_ pairs: Range<Int>) {
            for bh in pairs {
                let b = bh / NH, h = bh % NH
                let base = qkv + b * T * C3 + h * hs
                let dbase = dqkv + b * T * C3 + h * hs
                for t in 0..<T {
                    for part in 0..<3 { (dbase + t * C3 + part * C).update(repeating: 0, count: hs) }
                }
                let dp = scratch + bh * T
                for t in 0..<T {
                    let row = att + (bh * T + t) * T
                    let dy = dout + (b * T + t) * C + h * hs
                    var sum: Float = 0
                    if let mask {
                        // y = Σ (p·m) v: dp = m · (dy·v), dv += p·m · dy.
                        let m = mask + (bh * T + t) * T
                        for t2 in 0...t {
                            if m[t2] == 0 { dp[t2] = 0; continue }
                            let d = m[t2] * dot(dy, base + t2 * C3 + 2 * C, hs)
                            dp[t2] = d
                            sum += d * row[t2]
                            axpy(row[t2] * m[t2], dy, dbase + t2 * C3 + 2 * C, hs)   // dv
                        }
                    } else {
                        for t2 in 0...t {
                            let d = dot(dy, base + t2 * C3 + 2 * C, hs)
                            dp[t2] = d
                            sum += d * row[t2]
                            axpy(row[t2], dy, dbase + t2 * C3 + 2 * C, hs)   // dv
                        }
                    }
                    let q = base + t * C3
                    let dq = dbase + t * C3
                    for t2 in 0...t {
                        let ds = row[t2] * (dp[t2] - sum) * scale
                        axpy(ds, base + t2 * C3 + C, dq, hs)          // dq
                        axpy(ds, q, dbase + t2 * C3 + C, hs)          // dk
                    }
                }
            }
        }
    }

    /// One query against a cache of keys and values, for decoding.
    /// q (C), kCache (n,C), vCache (n,C) -> out (C); scores holds NH*n floats.
    public static func forwardOne(_ out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                                  kCache: UnsafePointer<Float>, vCache: UnsafePointer<Float>,
                                  scores: UnsafeMutablePointer<Float>, n: Int, C: Int, NH: Int) {
        let hs = C / NH
        let scale = 1 / Float(hs).squareRoot()
        Parallel.forRanges(NH, minimumPerThread: n >= 128 ? 1 : NH, ForwardOne(out: out, q: q, kCache: kCache, vCache: vCache, scores: scores, n: n, C: C, hs: hs, scale: scale))
    }

    struct ForwardOne: RangeKernel {
        let out: UnsafeMutablePointer<Float>
        let q, kCache, vCache: UnsafePointer<Float>
        let scores: UnsafeMutablePointer<Float>
        let n, C, hs: Int
        let scale: Float
        func run(_ heads: Range<Int>) {
            for h in heads {
                let row = scores + h * n
                let qh = q + h * hs
                for t2 in 0..<n { row[t2] = dot(qh, kCache + t2 * C + h * hs, hs) * scale }
                softmaxRow(row, n)
                let o = out + h * hs
                o.update(repeating: 0, count: hs)
                for t2 in 0..<n { axpy(row[t2], vCache + t2 * C + h * hs, o, hs) }
            }
        }
    }
}
