import CSystem
import FoundationEssentials
import Glibc

/// What the process holds in memory, for the checks that a training step allocates nothing.
public enum Memory {
    /// Bytes the C heap's main arena has handed out and not taken back, plus mmapped blocks
    /// (glibc's mallinfo2). Allocations made on the main thread land here.
    public static var heapBytesInUse: Int {
        let info = mallinfo2()
        return Int(info.uordblks) + Int(info.hblkhd)
    }

    /// Resident set size in bytes.
    public static var residentBytes: Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

extension Memory {
    /// For each of `ranges`, inside the read-only file mapping `mapping`, whether the kernel
    /// maps all of it with huge pages (so that reading it costs a TLB entry per 2 MB, as the
    /// buffers' huge pages do). It does where the page cache holds the file in 2 MB folios and
    /// the mapping is aligned to them. One page of each 2 MB block is mapped to see (a fault
    /// maps a huge page whole, 4 KB pages a few at a time); the mapping is first marked for huge
    /// pages, so that a part of the file not cached is read into such folios. nil when the
    /// kernel cannot say (PAGEMAP_SCAN came with Linux 6.7) or a page cannot be mapped.
    public static func mappedInHugePages(_ ranges: [UnsafeRawBufferPointer], mapping: UnsafeRawBufferPointer) -> [Bool]? {
        let page = 4096, huge = 2 << 20
        guard let base = mapping.baseAddress, mapping.count > 0 else { return nil }
        let start = Int(bitPattern: base) / page * page, end = (Int(bitPattern: base) + mapping.count + page - 1) / page * page
        _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_HUGEPAGE)
        var blocks = Set<Int>()
        for r in ranges where r.count > 0 {
            let a = Int(bitPattern: r.baseAddress), b = a + r.count
            precondition(a >= start && b <= end, "a range outside the mapping")
            for block in a / huge ... (b - 1) / huge where blocks.insert(block).inserted {
                let first = max(a, block * huge) / page * page
                guard madvise(UnsafeMutableRawPointer(bitPattern: first), page, 22 /* MADV_POPULATE_READ */) == 0 else { return nil }
            }
        }
        let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        guard pagemap >= 0 else { return nil }
        defer { close(pagemap) }
        var runs: [Range<Int>] = []   // in address order, touching runs joined
        var found = [UInt64](repeating: 0, count: 128)
        var at = UInt64(start)
        while at < UInt64(end) {
            var walked: UInt64 = 0
            let n = gen_huge_runs(pagemap, at, UInt64(end), &found, 64, &walked)
            guard n >= 0 else { return nil }
            for i in 0 ..< n {
                let run = Int(found[2 * i]) ..< Int(found[2 * i + 1])
                if let last = runs.last, last.upperBound == run.lowerBound { runs[runs.count - 1] = last.lowerBound ..< run.upperBound }
                else { runs.append(run) }
            }
            guard walked > at else { break }
            at = walked
        }
        return ranges.map { r in
            let a = Int(bitPattern: r.baseAddress), b = a + r.count
            return r.count == 0 || runs.contains { $0.lowerBound <= a && b <= $0.upperBound }
        }
    }
}
