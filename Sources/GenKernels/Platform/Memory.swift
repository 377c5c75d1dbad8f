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
    /// The share of the 2 MB blocks that `ranges` touch, inside the read-only file mapping
    /// `mapping`, that the kernel maps whole, each with a single huge page (so that reading them
    /// costs a TLB entry a block, as the buffers' huge pages do). That happens when the page
    /// cache holds the file in 2 MB folios and the mapping is aligned to them. One page of each
    /// block is mapped to see (a fault maps a huge page whole, 4 KB pages a few at a time), and
    /// the process's file pages mapped huge are counted before and after; the mapping is first
    /// marked for huge pages, so that a part of the file not cached is read into such folios.
    /// 0 when a page cannot be mapped or /proc/self/smaps_rollup does not say. A block that was
    /// mapped already is not counted, so the share can under-state by a block or two.
    public static func fileHugePageShare(mapping: UnsafeRawBufferPointer, ranges: [UnsafeRawBufferPointer]) -> Double {
        let page = 4096, huge = 2 << 20
        guard let base = mapping.baseAddress, mapping.count > 0, let before = filePMDBytes() else { return 0 }
        let start = Int(bitPattern: base) / page * page, end = Int(bitPattern: base) + mapping.count
        _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_HUGEPAGE)
        var blocks = Set<Int>()
        for r in ranges where r.count > 0 {
            let a = Int(bitPattern: r.baseAddress), b = a + r.count
            precondition(a >= start && b <= end, "a range outside the mapping")
            for block in a / huge ... (b - 1) / huge where blocks.insert(block).inserted {
                let first = max(a, block * huge) / page * page
                guard madvise(UnsafeMutableRawPointer(bitPattern: first), page, 22 /* MADV_POPULATE_READ */) == 0 else { return 0 }
            }
        }
        guard !blocks.isEmpty, let after = filePMDBytes() else { return 0 }
        return min(1, Double(max(0, after - before)) / Double(blocks.count * huge))
    }

    /// The bytes of file pages the process maps with huge pages (FilePmdMapped in
    /// /proc/self/smaps_rollup), or nil when it cannot be read or does not say.
    static func filePMDBytes() -> Int? {
        guard let text = readSmallFile("/proc/self/smaps_rollup"),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("FilePmdMapped:") }) else { return nil }
        let fields = line.split(separator: " ")
        guard fields.count >= 2, let kB = Int(fields[1]) else { return nil }
        return kB * 1024
    }
}
