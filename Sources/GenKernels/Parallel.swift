import Synchronization
import CSystem
#if canImport(Glibc)
import Glibc
#endif

/// How gen's own kernels split their work over threads.
///
/// One owner of the cores per operation: OpenBLAS runs single-threaded and every parallel
/// region (including the blocks of a matrix product) runs on gen's pool. The pool's threads
/// are started once and then wait for work, so a parallel region allocates nothing and costs
/// about a microsecond to start (a DispatchQueue.concurrentPerform region costs several, boxes
/// its closure, and its worker threads come and go, allocating as they do). Kernels in the
/// training step are `RangeKernel` values, not closures, so a region allocates nothing.
public enum Parallel {
    /// The number of cores online.
    public static var cores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The width of parallel regions started by the running task (or thread): set per run with
    /// `withThreads`, so that two runs in one process (tests in parallel) do not share it.
    @TaskLocal static var width: Int = Parallel.cores

    /// Threads the kernels called from here use.
    public static var threads: Int { width }

    /// Runs `body` with kernels split over `n` threads (at least 1, at most 256).
    public static func withThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        BLAS.keepSingleThreaded()
        return try $width.withValue(min(256, max(1, n)), operation: body)
    }

    /// Pools by size, created on first use and kept: a pool may be running a region on one
    /// thread while another thread asks for a different size (tests change `threads`).
    nonisolated(unsafe) static var pools: [ThreadPool?] = Array(repeating: nil, count: 257)
    static let poolsLock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Runs `kernel` on `min(threads, count / minimumPerThread)` disjoint contiguous ranges
    /// covering `0..<count`, in parallel, and returns when all are done. The kernel is a value
    /// passed by address to the pool's threads: nothing is allocated.
    @inline(__always)
    public static func forRanges<K: RangeKernel>(_ count: Int, minimumPerThread: Int = 1, _ kernel: K) {
        let n = min(threads, 256, max(1, count / max(1, minimumPerThread)))
        if n <= 1 || count <= 1 {
            kernel.run(0..<count)
            return
        }
        let split = Split(kernel: kernel, count: count, parts: n)
        withUnsafePointer(to: split) { p in
            currentPool().run(parts: n, context: UnsafeRawPointer(p)) { raw, part in
                raw.assumingMemoryBound(to: Split<K>.self).pointee.run(part)
            }
        }
    }

    /// The same for a closure, for work outside the training step: a closure handed to other
    /// threads is boxed on the heap (withoutActuallyEscaping), one small allocation per call.
    public static func forRanges(_ count: Int, minimumPerThread: Int = 1, _ body: (Range<Int>) -> Void) {
        withoutActuallyEscaping(body) { escapable in
            forRanges(count, minimumPerThread: minimumPerThread, ClosureKernel(body: escapable))
        }
    }

    static func currentPool() -> ThreadPool {
        let size = min(threads, pools.count - 1)
        pthread_mutex_lock(poolsLock)
        defer { pthread_mutex_unlock(poolsLock) }
        if let p = pools[size] { return p }
        let p = ThreadPool(size: size)
        pools[size] = p
        return p
    }
}

/// Work split over threads by `Parallel.forRanges`: `run` is called with disjoint ranges.
public protocol RangeKernel {
    func run(_ range: Range<Int>)
}

struct ClosureKernel: RangeKernel {
    let body: (Range<Int>) -> Void
    func run(_ range: Range<Int>) { body(range) }
}

struct Split<K: RangeKernel> {
    let kernel: K
    let count, parts: Int

    @inline(__always) func run(_ part: Int) {
        let lo = count * part / parts
        let hi = count * (part + 1) / parts
        if lo < hi { kernel.run(lo..<hi) }
    }
}

/// `size - 1` worker threads plus the caller. Workers spin briefly for the next region, then
/// sleep on a condition variable.
final class ThreadPool: @unchecked Sendable {
    let size: Int
    private let generation = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    /// The running region: a context pointer and a function without captures, so that
    /// starting a region allocates nothing.
    private var context: UnsafeRawPointer?
    private var invoke: ((UnsafeRawPointer, Int) -> Void)?
    private var parts = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init(size: Int) {
        self.size = size
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        for i in 1..<size {
            let box = Unmanaged.passRetained(WorkerStart(pool: self, index: i)).toOpaque()
            var thread = pthread_t()
            pthread_create(&thread, nil, { raw in
                let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
                start.pool.work(start.index)
                return nil
            }, box)
            pthread_detach(thread)
        }
    }

    /// Runs body(0..<parts) with part 0 on the calling thread. A region started while another
    /// runs (another caller thread, or nesting) runs serially on its caller instead.
    func run(parts: Int, context: UnsafeRawPointer, _ invoke: @escaping (UnsafeRawPointer, Int) -> Void) {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for p in 0..<parts { invoke(context, p) }
            return
        }
        self.context = context
        self.invoke = invoke
        self.parts = parts
        remaining.store(size - 1, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(cond)
            pthread_mutex_unlock(mutex)
        }
        invoke(context, 0)
        while remaining.load(ordering: .acquiring) > 0 { spinPause() }
        self.invoke = nil
        self.context = nil
        busy.store(false, ordering: .releasing)
    }

    private func work(_ index: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < 50_000 { spinPause(); continue }
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(cond, mutex) }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
            }
            seen = generation.load(ordering: .acquiring)
            if index < parts { invoke!(context!, index) }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}

private final class WorkerStart {
    let pool: ThreadPool
    let index: Int
    init(pool: ThreadPool, index: Int) { self.pool = pool; self.index = index }
}

@inline(__always)
private func spinPause() { gen_cpu_relax() }
