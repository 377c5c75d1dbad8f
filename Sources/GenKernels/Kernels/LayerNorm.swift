/// Layer normalisation over the last dimension, with learned scale and shift.
public enum LayerNorm {
    /// inp (M,C), weight (C), bias (C) -> out (M,C), mean (M), rstd (M)
    public static func forward(_ out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                               rstd: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                               weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                               M: Int, C: Int, eps: Float = 1e-5) {
        Parallel.forRanges(M, minimumPerThread: 16, Forward(out: out, mean: mean, rstd: rstd, inp: inp, weight: weight, bias: bias, C: C, eps: eps))
    }

    struct Forward: RangeKernel {
        let out, mean, rstd: UnsafeMutablePointer<Float>
        let inp, weight, bias: UnsafePointer<Float>
        let C: Int
        let eps: Float
        func run(_ rows: Range<Int>) {
            for r in rows {
                let x = inp + r * C, o = out + r * C
                let m = rowSum(x, C) / Float(C)
                let v = rowSquaredDeviation(x, m, C) / Float(C)
                let s = 1 / (v + eps).squareRoot()
                mean[r] = m
                rstd[r] = s
                var c = 0
                let mv = Float32x16(repeating: m), sv = Float32x16(repeating: s)
                while c + 16 <= C {
                    let n = (load16(x + c) - mv) * sv
                    store16(n * load16(weight + c) + load16(bias + c), o + c)
                    c += 16
                }
                while c < C { o[c] = (x[c] - m) * s * weight[c] + bias[c]; c += 1 }
            }
        }
    }

    /// dout (M,C), inp (M,C), weight (C), mean (M), rstd (M) -> dinp (M,C) +=, dweight (C) +=,
    /// dbias (C) += (nil for a frozen LayerNorm: its parameter gradients are not computed)
    public static func backward(dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>?,
                                dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, M: Int, C: Int) {
        // Pass 1, over rows: the input gradient.
        Parallel.forRanges(M, minimumPerThread: 16, InputGradient(dinp: dinp, dout: dout, inp: inp, weight: weight, mean: mean, rstd: rstd, C: C))
        // Pass 2, over column blocks (each thread owns its slice of dweight and dbias).
        guard let dweight, let dbias else { return }
        let blocks = (C + 15) / 16
        Parallel.forRanges(blocks, minimumPerThread: 4, ParameterGradient(dweight: dweight, dbias: dbias, dout: dout, inp: inp, mean: mean, rstd: rstd, M: M, C: C))
    }

    struct ParameterGradient: RangeKernel {
        let dweight, dbias: UnsafeMutablePointer<Float>
        let dout, inp, mean, rstd: UnsafePointer<Float>
        let M, C: Int
        func run(_ range: Range<Int>) {
            let c0 = range.lowerBound * 16, c1 = min(C, range.upperBound * 16)
            var c = c0
            // Four vectors of columns at a time (256 contiguous bytes of each row, as in
            // `Matmul.columnSums`); each column's sums are the same chains over the rows.
            while c + 64 <= c1 {
                var w0 = Float32x16(), w1 = Float32x16(), w2 = Float32x16(), w3 = Float32x16()
                var b0 = Float32x16(), b1 = Float32x16(), b2 = Float32x16(), b3 = Float32x16()
                for r in 0..<M {
                    let d = dout + r * C + c, x = inp + r * C + c
                    let mv = Float32x16(repeating: mean[r]), sv = Float32x16(repeating: rstd[r])
                    let d0 = load16(d), d1 = load16(d + 16), d2 = load16(d + 32), d3 = load16(d + 48)
                    b0 += d0; b1 += d1; b2 += d2; b3 += d3
                    w0 = w0.addingProduct(d0, (load16(x) - mv) * sv)
                    w1 = w1.addingProduct(d1, (load16(x + 16) - mv) * sv)
                    w2 = w2.addingProduct(d2, (load16(x + 32) - mv) * sv)
                    w3 = w3.addingProduct(d3, (load16(x + 48) - mv) * sv)
                }
                store16(load16(dweight + c) + w0, dweight + c); store16(load16(dbias + c) + b0, dbias + c)
                store16(load16(dweight + c + 16) + w1, dweight + c + 16); store16(load16(dbias + c + 16) + b1, dbias + c + 16)
                store16(load16(dweight + c + 32) + w2, dweight + c + 32); store16(load16(dbias + c + 32) + b2, dbias + c + 32)
                store16(load16(dweight + c + 48) + w3, dweight + c + 48); store16(load16(dbias + c + 48) + b3, dbias + c + 48)
                c += 64
            }
            while c + 16 <= c1 {
                var gw = Float32x16(), gb = Float32x16()
                for r in 0..<M {
                    let d = load16(dout + r * C + c)
                    gb += d
                    gw = gw.addingProduct(d, (load16(inp + r * C + c) - Float32x16(repeating: mean[r])) * Float32x16(repeating: rstd[r]))
                }
                store16(load16(dweight + c) + gw, dweight + c)
                store16(load16(dbias + c) + gb, dbias + c)
                c += 16
            }
            while c < c1 {
                var gw: Float = 0, gb: Float = 0
                for r in 0..<M {
                    let d = dout[r * C + c]
                    gb += d
                    gw += d * (inp[r * C + c] - mean[r]) * rstd[r]
                }
                dweight[c] += gw
                dbias[c] += gb
                c += 1
            }
        }
    }

    struct InputGradient: RangeKernel {
        let dinp: UnsafeMutablePointer<Float>
        let dout, inp, weight, mean, rstd: UnsafePointer<Float>
        let C: Int
        func run(_ rows: Range<Int>) {
            for r in rows {
                let x = inp + r * C, d = dout + r * C, di = dinp + r * C
                let m = mean[r], s = rstd[r]
                let mv = Float32x16(repeating: m), sv = Float32x16(repeating: s)
                var a0 = Float32x16(), a1 = Float32x16()
                var c = 0
                while c + 16 <= C {
                    let dn = load16(d + c) * load16(weight + c)
                    a0 += dn
                    a1 = a1.addingProduct(dn, (load16(x + c) - mv) * sv)
                    c += 16
                }
                var dnMean = a0.sum(), dnNormMean = a1.sum()
                while c < C {
                    let dn = d[c] * weight[c]
                    dnMean += dn
                    dnNormMean += dn * (x[c] - m) * s
                    c += 1
                }
                dnMean /= Float(C)
                dnNormMean /= Float(C)
                let dmv = Float32x16(repeating: dnMean), dnnv = Float32x16(repeating: dnNormMean)
                c = 0
                while c + 16 <= C {
                    let n = (load16(x + c) - mv) * sv
                    let dn = load16(d + c) * load16(weight + c)
                    store16(load16(di + c) + (dn - dmv - n * dnnv) * sv, di + c)
                    c += 16
                }
                while c < C {
                    let n = (x[c] - m) * s
                    di[c] += (d[c] * weight[c] - dnMean - n * dnNormMean) * s
                    c += 1
                }
            }
        }
    }
}

@inline(__always)
func rowSum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var a0 = Float32x16(), a1 = Float32x16()
    var i = 0
    while i + 32 <= n { a0 += load16(x + i); a1 += load16(x + i + 16); i += 32 }
    if i + 16 <= n { a0 += load16(x + i); i += 16 }
    var s = (a0 + a1).sum()
    while i < n { s += x[i]; i += 1 }
    return s
}

@inline(__always)
func rowSquaredDeviation(_ x: UnsafePointer<Float>, _ m: Float, _ n: Int) -> Float {
    let mv = Float32x16(repeating: m)
    var a0 = Float32x16()
    var i = 0
    while i + 16 <= n { let d = load16(x + i) - mv; a0 = a0.addingProduct(d, d); i += 16 }
    var s = a0.sum()
    while i < n { let d = x[i] - m; s += d * d; i += 1 }
    return s
}
