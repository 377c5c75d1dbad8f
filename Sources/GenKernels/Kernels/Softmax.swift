import CSystem
import Glibc

/// Softmax of one row in place: x (n) -> exp(x - max) / Σ. Returns log Σ exp(x - max) and the max.
@inline(__always)
@discardableResult
public func softmaxRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> (max: Float, logSum: Float) {
    var mv = Float32x16(repeating: -.infinity)
    var i = 0
    // A comparison and a masked move: the generic `pointwiseMax` compares lane by lane.
    while i + 16 <= n { let v = load16(x + i); mv.replace(with: v, where: v .> mv); i += 16 }
    // The tail (1 to 15 entries) in one vector whose other lanes are -∞.
    if i < n { let v = gen_load_first16(x + i, n - i, -.infinity); mv.replace(with: v, where: v .> mv) }
    let m = mv.max()
    let mm = Float32x16(repeating: m)
    var acc = Float32x16()
    i = 0
    while i + 16 <= n { let e = simdExp(load16(x + i) - mm); store16(e, x + i); acc += e; i += 16 }
    var s = acc.sum()
    let tail = n - i
    if tail > 0 {
        let e = simdExp(gen_load_first16(x + i, tail, -.infinity) - mm)
        gen_store_first16(x + i, e, tail)
        for j in 0..<tail { s += e[j] }
    }
    let inv = 1 / s
    let iv = Float32x16(repeating: inv)
    i = 0
    while i + 16 <= n { store16(load16(x + i) * iv, x + i); i += 16 }
    if tail > 0 { gen_store_first16(x + i, gen_load_first16(x + i, tail, 0) * iv, tail) }
    return (m, log(s))
}

/// The backward of a softmax row, scaled: d (n) = p ⊙ (d − Σ p·d) · scale, for p the row's
/// probabilities and d their gradient (then the scores').
@inline(__always)
public func softmaxGradientRow(_ p: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ n: Int, scale: Float) {
    let sum = dot(p, d, n)
    let sv = Float32x16(repeating: sum), cv = Float32x16(repeating: scale)
    var i = 0
    while i + 16 <= n { store16(load16(p + i) * (load16(d + i) - sv) * cv, d + i); i += 16 }
    while i < n { d[i] = p[i] * (d[i] - sum) * scale; i += 1 }
}

/// The sums Σ exp((a_i − b_i)·scale − shift) and Σ exp((a_i + b_i)·scale − shift) over i < n:
/// for logits known within ±b, the least and the most softmax's normaliser (shifted) can be.
/// Each entry is the exponential `fastExp` gives for it.
public func boundedMass(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, scale: Float, shift: Float,
                        n: Int) -> (low: Float, high: Float) {
    let sv = Float32x16(repeating: scale), mv = Float32x16(repeating: shift)
    var low = Float32x16(), high = Float32x16()
    var i = 0
    while i + 16 <= n {
        let x = load16(a + i), y = load16(b + i)
        low += simdExp((x - y) * sv - mv)
        high += simdExp((x + y) * sv - mv)
        i += 16
    }
    var l = treeSum(low), h = treeSum(high)
    while i < n {
        l += fastExp((a[i] - b[i]) * scale - shift)
        h += fastExp((a[i] + b[i]) * scale - shift)
        i += 1
    }
    return (l, h)
}

/// w = exp((a + b)·scale − m) for n entries, m the largest (a + b)·scale (returned), and the sum
/// of each run of `span` entries of w into sums (⌈n / span⌉ of them; span a multiple of 16):
/// unnormalised softmax weights of shifted, scaled rows, summed in blocks for drawing from them.
public func shiftedExp(_ w: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, plus b: UnsafePointer<Float>,
                       scale: Float, n: Int, span: Int, sums: UnsafeMutablePointer<Float>) -> Float {
    precondition(span % 16 == 0)
    let sv = Float32x16(repeating: scale)
    var mv = Float32x16(repeating: -.infinity)
    var i = 0
    while i + 16 <= n {
        let v = (load16(a + i) + load16(b + i)) * sv
        mv.replace(with: v, where: v .> mv)
        i += 16
    }
    var m = mv.max()
    while i < n { m = Swift.max(m, (a[i] + b[i]) * scale); i += 1 }
    let mm = Float32x16(repeating: m)
    var block = 0
    i = 0
    while i < n {
        let end = Swift.min(n, i + span)
        var acc = Float32x16()
        while i + 16 <= end {
            let e = simdExp((load16(a + i) + load16(b + i)) * sv - mm)
            store16(e, w + i)
            acc += e
            i += 16
        }
        var s = treeSum(acc)
        if i < end {
            // The tail (1 to 15 entries) in one vector.
            let tail = end - i
            let e = simdExp((gen_load_first16(a + i, tail, 0) + gen_load_first16(b + i, tail, 0)) * sv - mm)
            gen_store_first16(w + i, e, tail)
            for j in 0..<tail { s += e[j] }
            i = end
        }
        sums[block] = s
        block += 1
    }
    return m
}
