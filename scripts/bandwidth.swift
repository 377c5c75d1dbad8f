// Memory read bandwidth with 1 and 2 threads: sums a 1 GiB buffer of floats (SIMD, several
// passes), the best of the passes. Decoding reads every weight once per token, so this bounds
// tokens per second at bandwidth / model bytes.
// Usage: scripts/bandwidth   (compiles this file with swiftc -Ounchecked and runs it)
import Foundation

let count = 1 << 28                                  // 1 GiB of floats
let buffer = UnsafeMutablePointer<SIMD16<Float>>.allocate(capacity: count / 16)
buffer.initialize(repeating: SIMD16<Float>(repeating: 1), count: count / 16)
var sink: Float = 0

func readAll(threads: Int) -> Double {
    let per = count / 16 / threads
    var best = 0.0
    for _ in 0..<5 {
        let t0 = Date()
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: threads)
        DispatchQueue.concurrentPerform(iterations: threads) { i in
            var a = SIMD16<Float>(), b = SIMD16<Float>(), c = SIMD16<Float>(), d = SIMD16<Float>()
            let p = buffer + i * per
            var j = 0
            while j + 4 <= per { a += p[j]; b += p[j + 1]; c += p[j + 2]; d += p[j + 3]; j += 4 }
            sums[i] = (a + b + c + d).sum()
        }
        let s = Date().timeIntervalSince(t0)
        for i in 0..<threads { sink += sums[i] }
        sums.deallocate()
        best = max(best, Double(count * 4) / s / 1e9)
    }
    return best
}

for threads in [1, 2] {
    print(String(format: "read bandwidth, %d thread%@: %.1f GB/s (best of 5 passes over 1 GiB)", threads, threads == 1 ? "" : "s", readAll(threads: threads)))
}
if sink == -1 { print(sink) }
