import Foundation

/// Softmax of one row in place: x (n) -> exp(x - max) / Σ. Returns log Σ exp(x - max) and the max.
@inline(__always)
@discardableResult
public func softmaxRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> (max: Float, logSum: Float) {
    var mv = Float32x16(repeating: -.infinity)
    var i = 0
    // A comparison and a masked move: the generic `pointwiseMax` compares lane by lane.
    while i + 16 <= n { let v = load16(x + i); mv.replace(with: v, where: v .> mv); i += 16 }
    var m = mv.max()
    while i < n { m = Swift.max(m, x[i]); i += 1 }
    let mm = Float32x16(repeating: m)
    var acc = Float32x16()
    i = 0
    while i + 16 <= n { let e = simdExp(load16(x + i) - mm); store16(e, x + i); acc += e; i += 16 }
    var s = acc.sum()
    if i < n {
        // The tail goes through one padded vector.
        var tail = Float32x16(repeating: -.infinity)
        for j in i..<n { tail[j - i] = x[j] - m }
        let e = simdExp(tail)
        for j in i..<n { x[j] = e[j - i]; s += e[j - i] }
    }
    let inv = 1 / s
    let iv = Float32x16(repeating: inv)
    i = 0
    while i + 16 <= n { store16(load16(x + i) * iv, x + i); i += 16 }
    while i < n { x[i] *= inv; i += 1 }
    return (m, log(s))
}
