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
        try $width.withValue(min(256, max(1, n)), operation: body)
    }

    /// Pools by size, created on first use and kept: a pool may be running a region on one
    /// thread while another thread asks for a different size (tests change `threads`).
    nonisolated(unsafe) static var pools: [ThreadPool?] = Array(repeating: nil, count: 257)
    static let poolsLock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Runs `kernel` on disjoint contiguous ranges covering `0..<count`, in parallel, and
    /// returns when all are done. The work is cut into up to `chunksPerThread` chunks per thread
    /// (none smaller than `minimumPerThread`), which the threads take one at a time: when another
    /// process holds a core, the threads that run take the chunks of the one that waits. The
    /// kernel is a value passed by address to the pool's threads: nothing is allocated.
    @inline(__always)
    public static func forRanges<K: RangeKernel>(_ count: Int, minimumPerThread: Int = 1, _ kernel: K) {
        let n = min(threads, 256, max(1, count / max(1, minimumPerThread)))
        if n <= 1 || count <= 1 {
            kernel.run(0..<count)
            return
        }
        let chunks = min(count / max(1, minimumPerThread), n * chunksPerThread, count)
        let split = Split(kernel: kernel, count: count, parts: max(n, chunks))
        withUnsafePointer(to: split) { p in
            currentPool().run(parts: split.parts, context: UnsafeRawPointer(p)) { raw, part in
                raw.assumingMemoryBound(to: Split<K>.self).pointee.run(part)
            }
        }
    }

    /// Chunks per thread of a parallel region. One: a worker that has not started its chunk
    /// when the caller is done leaves it to the caller; more chunks made small regions (decoding)
    /// slower on an idle machine and were no faster under load.
    static let chunksPerThread = 1

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

/// `size - 1` worker threads plus the caller, taking the chunks of a region one at a time.
///
/// A region is one atomic word: its number, its chunk count and the next chunk to take. A
/// thread takes chunk i by advancing the word from i to i + 1 (compare-and-swap, so a chunk of
/// a region that has ended can never be taken), runs it, and counts it done; the caller takes
/// chunks too and returns when all are done. Nothing waits by spinning for long: workers spin
/// briefly for the next region, then sleep on a condition variable; the caller, once nothing is
/// left to take, spins briefly, then sleeps until the last chunk is done. While spinning, a
/// thread yields its core every 64 pauses to any thread that can run there (a worker that
/// another process had pushed off its own core, or that process): on a busy machine a spinning
/// pool steals no time, on an idle one a yield returns at once.
final class ThreadPool: @unchecked Sendable {
    let size: Int
    /// region number (32 bits) | chunks (16 bits) | next chunk (16 bits)
    private let claim = Atomic<UInt64>(0)
    private let done = Atomic<Int>(0)
    private let generation = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let callerSleeping = Atomic<Bool>(false)
    private let busy = Atomic<Bool>(false)
    private var region: UInt64 = 0
    /// The running region: a context pointer and a function without captures, so that
    /// starting a region allocates nothing.
    private var context: UnsafeRawPointer?
    private var invoke: ((UnsafeRawPointer, Int) -> Void)?
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Steps (`politePause`) a waiting thread takes before it sleeps (about a millisecond):
    /// on an idle machine the next region starts within that, and a sleeping worker would
    /// cost a wake-up per region (20,000 steps made small shapes' steps up to 20% slower).
    static let spins = 50_000

    init(size: Int) {
        self.size = size
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(finished, nil)
        for i in 1..<size {
            let box = Unmanaged.passRetained(WorkerStart(pool: self, index: i)).toOpaque()
            var thread = pthread_t()
            pthread_create(&thread, nil, { raw in
                let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
                start.pool.work()
                return nil
            }, box)
            pthread_detach(thread)
        }
    }

    /// Takes the next chunk of the running region: (chunk, chunks), or nil when none is left.
    @inline(__always)
    private func take() -> (Int, Int)? {
        var word = claim.load(ordering: .acquiring)
        while true {
            let chunks = Int((word >> 16) & 0xFFFF), next = Int(word & 0xFFFF)
            if next >= chunks { return nil }
            let (exchanged, now) = claim.compareExchange(expected: word, desired: word + 1, ordering: .acquiringAndReleasing)
            if exchanged { return (next, chunks) }
            word = now
        }
    }

    /// Takes and runs chunks until none is left; wakes a sleeping caller after the last.
    @inline(__always)
    private func runChunks() {
        while let (i, chunks) = take() {
            invoke!(context!, i)
            if done.add(1, ordering: .sequentiallyConsistent).newValue == chunks && callerSleeping.load(ordering: .sequentiallyConsistent) {
                pthread_mutex_lock(mutex)
                pthread_cond_signal(finished)
                pthread_mutex_unlock(mutex)
            }
        }
    }

    /// Runs body(0..<parts), in chunks taken by the caller and the workers. A region started
    /// while another runs (another caller thread, or nesting) runs serially on its caller.
    func run(parts: Int, context: UnsafeRawPointer, _ invoke: @escaping (UnsafeRawPointer, Int) -> Void) {
        guard parts <= 0xFFFF, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for p in 0..<parts { invoke(context, p) }
            return
        }
        self.context = context
        self.invoke = invoke
        done.store(0, ordering: .sequentiallyConsistent)
        region &+= 1
        claim.store((region & 0xFFFF_FFFF) << 32 | UInt64(parts) << 16, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
        }
        runChunks()
        var spins = 0
        while done.load(ordering: .acquiring) < parts {
            spins += 1
            if spins < Self.spins { politePause(spins); continue }
            pthread_mutex_lock(mutex)
            callerSleeping.store(true, ordering: .sequentiallyConsistent)
            while done.load(ordering: .sequentiallyConsistent) < parts { pthread_cond_wait(finished, mutex) }
            callerSleeping.store(false, ordering: .sequentiallyConsistent)
            pthread_mutex_unlock(mutex)
        }
        self.invoke = nil
        self.context = nil
        busy.store(false, ordering: .releasing)
    }

    private func work() {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < Self.spins { politePause(spins); continue }
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(wake, mutex) }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
            }
            seen = generation.load(ordering: .acquiring)
            runChunks()
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

/// One step of a wait: a pause, and every 64th a yield, so that a thread that waits gives its
/// core to any other thread that can run there (free when none can).
@inline(__always)
private func politePause(_ i: Int) {
    if i & 63 == 63 { sched_yield() } else { gen_cpu_relax() }
}
