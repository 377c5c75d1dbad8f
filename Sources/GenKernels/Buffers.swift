#if canImport(Glibc)
import Glibc
#endif

/// One allocation of floats (page-aligned, zeroed), freed with its owner.
///
/// Taken straight from the kernel with mmap: its pages arrive zeroed and are only faulted in
/// when first touched (so activations sized for the whole context cost nothing where a short
/// prompt never reaches). Buffers that are touched whole every step ask for transparent huge
/// pages (fewer TLB misses); others do not, as the kernel must clear a huge page whole.
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    let bytes: Int

    public init(count: Int, hugePages: Bool = false) {
        self.count = count
        let page = 4096
        bytes = (max(1, count) * 4 + page - 1) / page * page
        guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != MAP_FAILED else {
            fatalError("out of memory: cannot map \(bytes) bytes")
        }
        if hugePages && bytes >= 4 << 20 { madvise(raw, bytes, MADV_HUGEPAGE) }
        pointer = raw.bindMemory(to: Float.self, capacity: max(1, count))
    }

    deinit { munmap(pointer, bytes) }

    /// Sets every float to zero, split across the pool (a model's gradients are zeroed each
    /// step: on one thread the other would wait).
    public func zero() { Parallel.forRanges(count, minimumPerThread: 1 << 16, Zeros(pointer: pointer)) }

    struct Zeros: RangeKernel {
        let pointer: UnsafeMutablePointer<Float>
        func run(_ r: Range<Int>) { (pointer + r.lowerBound).update(repeating: 0, count: r.count) }
    }

    /// A copy of the contents (for tests and checkpoints; never in a training step).
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// dst[0..<count] = src[0..<count], split across the pool in runs of at least a megabyte: the
/// first touch of fresh pages (which the kernel zeroes) is shared by the threads too.
public func parallelCopy(_ dst: UnsafeMutableRawPointer, _ src: UnsafeRawPointer, bytes: Int) {
    let run = 1 << 20
    Parallel.forRanges((bytes + run - 1) / run, minimumPerThread: 4, ByteRuns(dst: dst, src: src, bytes: bytes, run: run))
}

struct ByteRuns: RangeKernel {
    let dst: UnsafeMutableRawPointer
    let src: UnsafeRawPointer
    let bytes, run: Int
    func run(_ r: Range<Int>) {
        let a = r.lowerBound * run, b = min(bytes, r.upperBound * run)
        (dst + a).copyMemory(from: src + a, byteCount: b - a)
    }
}

/// One allocation of bytes (page-aligned, zeroed), for weights kept in 8 bits.
public final class ByteBuffer {
    public let pointer: UnsafeMutablePointer<Int8>
    public let count: Int
    let floats: FloatBuffer

    public init(count: Int) {
        self.count = count
        floats = FloatBuffer(count: (count + 3) / 4, hugePages: true)
        pointer = UnsafeMutableRawPointer(floats.pointer).bindMemory(to: Int8.self, capacity: max(1, count))
    }
}

/// One allocation of Int32 token ids.
public final class TokenBuffer {
    public let pointer: UnsafeMutablePointer<Int32>
    public let count: Int

    public init(count: Int) {
        self.count = count
        pointer = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, count))
        pointer.initialize(repeating: 0, count: max(1, count))
    }

    deinit { pointer.deallocate() }
}
