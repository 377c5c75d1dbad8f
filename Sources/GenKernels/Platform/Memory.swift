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
