import FoundationEssentials
import Glibc
import GenKit

/// Results to stdout, every write checked: output that cannot be written (a full disk, a
/// closed pipe's reader gone) is an error, never a silent exit 0.
enum Output {
    /// Writes `s` and flushes it, so that text streams as it is made. Every byte goes out, a
    /// NUL too (byte-level tokens include it; `fputs` would stop there).
    static func write(_ s: String) throws {
        guard !s.isEmpty else { return }
        var s = s
        let written = s.withUTF8 { fwrite($0.baseAddress, 1, $0.count, stdout) == $0.count }
        if !written || fflush(stdout) != 0 { throw writeError() }
    }

    static func line(_ s: String) throws { try write(s + "\n") }

    /// Flushes what is buffered (at exit).
    static func finish() throws {
        if fflush(stdout) != 0 || ferror(stdout) != 0 { throw writeError() }
    }

    static func writeError() -> GenError {
        GenError("cannot write to standard output: \(String(cString: strerror(errno)))")
    }
}

/// Progress and notes to stderr (never checked: they are not results).
func note(_ s: String) { fputs(s + "\n", stderr) }

func formatCount(_ n: Int) -> String {
    if n >= 10_000_000 { return cFormat("%.1fM", Double(n) / 1e6) }
    if n >= 10_000 { return cFormat("%.1fk", Double(n) / 1e3) }
    return String(n)
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return cFormat("%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60) }
    return cFormat("%ld:%02ld", t / 60, t % 60)
}
