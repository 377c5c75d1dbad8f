import Dispatch

/// How many threads gen's own kernels split their work over.
///
/// One owner of the cores per operation: while a kernel here runs its threads, OpenBLAS is
/// idle, and while `cblas_sgemm` runs, these threads are not.
public enum Parallel {
    /// Threads used by gen's kernels (and given to OpenBLAS by `BLAS.setThreads`).
    nonisolated(unsafe) public static var threads: Int = Parallel.cores

    /// The number of cores this process may use.
    public static var cores: Int { max(1, ProcessInfo_activeCores()) }

    /// Calls `body` on `min(threads, count)` disjoint contiguous ranges covering `0..<count`,
    /// in parallel. Nothing is allocated on the heap by the caller's side of this call.
    @inline(__always)
    public static func forRanges(_ count: Int, minimumPerThread: Int = 1,
                                 _ body: (Range<Int>) -> Void) {
        let n = min(threads, max(1, count / max(1, minimumPerThread)))
        if n <= 1 || count <= 1 {
            body(0..<count)
            return
        }
        DispatchQueue.concurrentPerform(iterations: n) { part in
            let lo = count * part / n
            let hi = count * (part + 1) / n
            if lo < hi { body(lo..<hi) }
        }
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func ProcessInfo_activeCores() -> Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
#else
import Foundation
@inline(__always) func ProcessInfo_activeCores() -> Int { ProcessInfo.processInfo.activeProcessorCount }
#endif
