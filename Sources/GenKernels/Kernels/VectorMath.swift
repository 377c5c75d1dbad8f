/// Vector maths on SIMD16<Float> that the standard library does not have: exp and tanh.

public typealias Float32x16 = SIMD16<Float>

/// e^x for 16 lanes (Cephes' expf: range reduction by ln 2, degree-6 polynomial; about 1 ulp).
/// Inputs below -87.3 give about 1e-38 rather than 0, inputs above 88.3 give about 2e38.
@_transparent
public func simdExp(_ xIn: Float32x16) -> Float32x16 {
    // Clamp with comparisons and masks (the generic `clamped` is not vectorised).
    var x = xIn
    x.replace(with: Float32x16(repeating: -87.3), where: x .< -87.3)
    x.replace(with: Float32x16(repeating: 88.3), where: x .> 88.3)
    // n = round(x / ln 2) through the 1.5·2^23 trick: the sum's low mantissa bits hold n.
    let magic = Float32x16(repeating: 12_582_912)
    let shifted = x * 1.44269504088896341 + magic
    let n = shifted - magic
    x = x - n * 0.693359375
    x = x + n * 2.12194440e-4
    let z = x * x
    var y = Float32x16(repeating: 1.9875691500e-4)
    y = y * x + 1.3981999507e-3
    y = y * x + 8.3334519073e-3
    y = y * x + 4.1665795894e-2
    y = y * x + 1.6666665459e-1
    y = y * x + 5.0000001201e-1
    y = y * z + x + 1
    let bits = unsafeBitCast(shifted, to: SIMD16<UInt32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((bits &+ 127) &<< 23, to: Float32x16.self)
    return y * scale
}

/// tanh(x) for 16 lanes, as 1 - 2 / (e^(2x) + 1).
@_transparent
public func simdTanh(_ x: Float32x16) -> Float32x16 {
    let e = simdExp(x + x)
    return 1 - 2 / (e + 1)
}

/// Scalar e^x through the same polynomial (for tails shorter than 16 lanes).
@inline(__always)
public func fastExp(_ x: Float) -> Float {
    simdExp(Float32x16(repeating: x))[0]
}

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> Float32x16 {
    UnsafeRawPointer(p).loadUnaligned(as: Float32x16.self)
}

@inline(__always)
func store16(_ v: Float32x16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float32x16.self)
}

/// Dot product of two float vectors of length n.
@inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = Float32x16(), acc1 = Float32x16()
    var i = 0
    while i + 32 <= n {
        acc0 = acc0.addingProduct(load16(a + i), load16(b + i))
        acc1 = acc1.addingProduct(load16(a + i + 16), load16(b + i + 16))
        i += 32
    }
    if i + 16 <= n {
        acc0 = acc0.addingProduct(load16(a + i), load16(b + i))
        i += 16
    }
    var s = treeSum(acc0 + acc1)
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// The sum of 16 lanes by halving (four vector adds and a last scalar one), where `sum()`
/// adds the lanes one after another.
@inline(__always)
public func treeSum(_ v: Float32x16) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// y[i] += alpha * x[i] for i in 0..<n.
@inline(__always)
public func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    let a = Float32x16(repeating: alpha)
    var i = 0
    while i + 16 <= n {
        store16(load16(y + i).addingProduct(a, load16(x + i)), y + i)
        i += 16
    }
    while i < n { y[i] += alpha * x[i]; i += 1 }
}

/// The index of the first largest of x[0..<n] (n ≥ 1), NaNs passed over: what a scan that
/// keeps the first strictly larger entry gives (0 when x[0] is NaN, which none exceeds).
/// Two passes in vectors: the largest, then where it first occurs.
public func indexOfMax(_ x: UnsafePointer<Float>, _ n: Int) -> Int {
    if x[0].isNaN { return 0 }
    var m = Float32x16(repeating: x[0])
    var i = 0
    while i + 16 <= n {
        let v = load16(x + i)
        m = m.replacing(with: v, where: v .> m)
        i += 16
    }
    var top = m.max()
    while i < n { if x[i] > top { top = x[i] }; i += 1 }
    let t = Float32x16(repeating: top)
    i = 0
    while i + 16 <= n {
        if any(load16(x + i) .== t) { break }
        i += 16
    }
    while x[i] != top { i += 1 }
    return i
}
