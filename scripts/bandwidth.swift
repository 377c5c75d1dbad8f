// Memory read bandwidth with 1 and 2 threads: sums a 1 GiB buffer of floats (SIMD, several
// passes), the best of the passes. Decoding reads every weight once per token, so this bounds
// tokens per second at bandwidth / model bytes. Given a size in MB, the buffer has that size
// instead (a model's weights), read as many times as fit in 2 GiB: where the weights fit in
// the last-level cache (decode-M's 43 MB in a Xeon's 260 MB L3) decoding reads from there.
// Usage: scripts/bandwidth [MB]   (compiles this file with swiftc -Ounchecked and runs it)
import Foundation

let megabytes = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]).map { max(1, $0) } : nil
let count = megabytes.map { max(64, $0 << 18) / 64 * 64 } ?? 1 << 28   // floats: 1 GiB by default
let passes = megabytes.map { max(5, (1 << 31) / ($0 << 20)) } ?? 5
let buffer = UnsafeMutablePointer<SIMD16<Float>>.allocate(capacity: count / 16)
buffer.initialize(repeating: SIMD16<Float>(repeating: 1), count: count / 16)
var sink: Float = 0

func readAll(threads: Int) -> Double {
    let per = count / 16 / threads
    var best = 0.0
    for _ in 0..<passes {
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
    let over = megabytes.map { "\($0) MB" } ?? "1 GiB"
    print(String(format: "read bandwidth, %d thread%@: %.1f GB/s (best of %d passes over %@)", threads, threads == 1 ? "" : "s", readAll(threads: threads), passes, over))
}
if sink == -1 { print(sink) }
