import GenKernels
import FoundationEssentials
import Glibc

/// Reading corpora: files (or "-" for standard input) checked as UTF-8 and streamed one
/// chunk at a time, so a corpus never has to fit in memory as a String.
public enum Corpus {
    /// Calls `body` with each Unicode scalar value of the files, in order.
    /// - Throws: `GenError` for a missing, unreadable, empty or non-UTF-8 file (with the byte offset).
    public static func scan(_ paths: [String], _ body: (UInt32) throws -> Void) throws {
        for path in paths {
            guard let f = fopen(path, "rb") else {
                throw GenError("cannot read \(path): \(String(cString: strerror(errno)))")
            }
            defer { fclose(f) }
            var isDir = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir {
                throw GenError("\(path) is a directory, not a text file")
            }
            let chunk = 1 << 20
            var buf = [UInt8](repeating: 0, count: chunk + 4)
            var carry = 0          // bytes of an unfinished character kept at the front of buf
            var offset = 0         // file offset of buf[0]
            var total = 0
            while true {
                let n = buf.withUnsafeMutableBufferPointer { fread($0.baseAddress! + carry, 1, chunk, f) }
                if n == 0 {
                    if ferror(f) != 0 { throw GenError("cannot read \(path): read error") }
                    if carry > 0 { throw cutOff(path, byte: buf[0], at: offset) }
                    break
                }
                total += n
                let end = carry + n
                let done = try buf.withUnsafeBufferPointer { p -> Int in
                    try decode(p.baseAddress!, end, path: path, offset: offset, body)
                }
                // Move the unfinished tail to the front.
                let rest = end - done
                if rest > 0 { for i in 0..<rest { buf[i] = buf[done + i] } }
                offset += done
                carry = rest
            }
            if total == 0 { throw GenError("\(path) is empty") }
        }
    }

    /// Decodes complete UTF-8 sequences from p[0..<n]; returns how many bytes were consumed
    /// (an unfinished sequence at the end is left for the next chunk). A NUL is refused as the
    /// sign of a binary file unless `allowNUL`.
    @inline(__always)
    static func decode(_ p: UnsafePointer<UInt8>, _ n: Int, path: String, offset: Int, allowNUL: Bool = false,
                       _ body: (UInt32) throws -> Void) throws -> Int {
        var i = 0
        while i < n {
            switch UTF8Decoder.next(p, i, n) {
            case .scalar(let v, let len):
                if v == 0 && !allowNUL { throw GenError("\(path) holds a NUL byte at offset \(offset + i): it looks like a binary file, not text") }
                try body(v)
                i += len
            case .incomplete:
                return i
            case .invalid(let k):
                let why = k > 0 ? "invalid continuation byte" : (0xC2...0xF4).contains(p[i])
                    ? "an overlong, surrogate or out-of-range character" : "invalid start byte"
                throw notUTF8(path, byte: p[i], at: offset + i, why)
            }
        }
        return n
    }

    /// Checks p[0..<n] as `decode` does (UTF-8, no NUL) without decoding: the standard
    /// library's validation and memchr, with `decode` only to name a fault. Returns how many
    /// bytes end in a whole character (the rest start one that the next bytes finish).
    static func checkText(_ p: UnsafePointer<UInt8>, _ n: Int, name: String, offset: Int) throws -> Int {
        var whole = n   // back up over an unfinished character at the end
        var k = n - 1
        while k >= 0 && k >= n - 3 && p[k] & 0xC0 == 0x80 { k -= 1 }
        if k >= 0, case .incomplete = UTF8Decoder.next(p, k, n) { whole = k }
        if memchr(p, 0, whole) == nil && String(validating: UnsafeBufferPointer(start: p, count: whole), as: UTF8.self) != nil {
            return whole
        }
        return try decode(p, n, path: name, offset: offset) { _ in }
    }

    /// Every input's UTF-8 error: "NAME is not valid UTF-8: byte 0xE9 at offset 3 (invalid
    /// continuation byte)", the byte that starts the bad character, its offset counted from 0
    /// (as `xxd` and Python count), and why.
    static func notUTF8(_ name: String, byte: UInt8, at offset: Int, _ why: String) -> GenError {
        GenError("\(name) is not valid UTF-8: byte 0x\(String(byte, radix: 16, uppercase: true)) at offset \(offset) (\(why))")
    }

    /// The error for input that ends inside the character that `byte` at `offset` starts.
    static func cutOff(_ name: String, byte: UInt8, at offset: Int) -> GenError {
        notUTF8(name, byte: byte, at: offset, "its character is cut off at the end")
    }

    /// `bytes` as a String, checked to be UTF-8 (NUL allowed), with `notUTF8`'s error; `offset`
    /// is where the bytes start in what `name` names (a part of a stream), for the error.
    public static func text(_ bytes: UnsafeBufferPointer<UInt8>, name: String, offset: Int = 0) throws -> String {
        if let s = String(validating: bytes, as: UTF8.self) { return s }
        guard let p = bytes.baseAddress else { return "" }
        let done = try decode(p, bytes.count, path: name, offset: offset, allowNUL: true) { _ in }
        throw cutOff(name, byte: p[done], at: offset + done)
    }

    /// `data` as a String, checked as `text(_:name:)` checks.
    public static func text(_ data: Data, name: String) throws -> String {
        try data.withUnsafeBytes { try text($0.bindMemory(to: UInt8.self), name: name) }
    }

    /// A file mapped into memory, checked to be non-empty valid UTF-8; errors call it `name`
    /// (by default its path: a spooled stream's path is not the user's).
    public static func mapValidated(_ path: String, name: String? = nil) throws -> Data {
        let name = name ?? path
        var isDir = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw GenError("cannot read \(name): No such file or directory")
        }
        if isDir { throw GenError("\(name) is a directory, not a text file") }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw GenError("cannot read \(name)")
        }
        if data.isEmpty { throw GenError("\(name) is empty") }
        try data.withUnsafeBytes { raw in
            let p = raw.bindMemory(to: UInt8.self).baseAddress!
            let done = try checkText(p, raw.count, name: name, offset: 0)
            if done < raw.count { throw cutOff(name, byte: p[done], at: done) }
        }
        return data
    }
}

/// A stream that can be read only once (standard input, a pipe) copied to a file so that it can
/// be read twice. The file is created under an unpredictable name (O_EXCL|O_NOFOLLOW) and
/// unlinked at once: nothing is left behind even if gen is killed, and `path` (/proc/self/fd/N)
/// names the open file while this value lives.
public final class SpooledStream {
    public let path: String
    /// What the stream is called in messages (e.g. "standard input").
    public let name: String
    public let bytes: Int
    let fd: Int32

    /// Copies `source` (an open descriptor, read to its end) into `folder`, checking it as text
    /// as it goes (UTF-8 without NUL, as `Corpus.scan` checks: binary input such as /dev/zero
    /// is refused at once, not copied first), and stopping with an error before the folder's
    /// file system would be left with less than 1 GB (or 5%) free.
    /// - Throws: `GenError` when the stream is empty, cannot be read, is not text, or is too large.
    public init(reading source: Int32, name: String, into folder: String) throws {
        self.name = name
        var fd: Int32 = -1
        for _ in 0..<16 {
            let candidate = folder + "/.gen-spool-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
            fd = open(candidate, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd >= 0 { unlink(candidate); break }
            if errno != EEXIST { break }
        }
        guard fd >= 0 else { throw GenError("cannot keep a copy of \(name) in \(folder): \(String(cString: strerror(errno)))") }
        self.fd = fd
        path = "/proc/self/fd/\(fd)"
        let chunk = 1 << 20
        var buf = [UInt8](repeating: 0, count: chunk + 4)
        var carry = 0          // bytes of an unfinished character kept at the front of buf
        var total = 0
        var checked = 0
        while true {
            let n = buf.withUnsafeMutableBytes { read(source, $0.baseAddress! + carry, chunk) }
            if n < 0 {
                if errno == EINTR { continue }
                let message = errno == EBADF ? "it is closed" : String(cString: strerror(errno))
                close(fd)
                throw GenError("cannot read \(name): \(message)")
            }
            if n == 0 {
                if carry > 0 { close(fd); throw Corpus.cutOff(name, byte: buf[0], at: total - carry) }
                break
            }
            var done = 0
            while done < n {
                let w = buf.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + carry + done, n - done) }
                if w <= 0 { close(fd); throw GenError("cannot keep a copy of \(name) in \(folder): \(String(cString: strerror(w < 0 ? errno : ENOSPC)))") }
                done += w
            }
            let end = carry + n
            do {
                let whole = try buf.withUnsafeBufferPointer { try Corpus.checkText($0.baseAddress!, end, name: name, offset: total - carry) }
                for i in 0..<(end - whole) { buf[i] = buf[whole + i] }
                carry = end - whole
            } catch {
                close(fd)
                throw error
            }
            total += n
            if total - checked >= 64 << 20 {
                checked = total
                var st = statvfs()
                if fstatvfs(fd, &st) == 0 {
                    let free = Double(st.f_bavail) * Double(st.f_frsize), size = Double(st.f_blocks) * Double(st.f_frsize)
                    if free < max(1e9, 0.05 * size) {
                        close(fd)
                        throw GenError("\(name) is too large to keep a copy of in \(folder) (" + cFormat("%.1f", Double(total) / 1e9) + " GB read; the disk is nearly full)")
                    }
                }
            }
        }
        guard total > 0 else { close(fd); throw GenError("\(name) is empty") }
        bytes = total
    }

    deinit { close(fd) }
}

/// True when `path` names something that can be read only once (a pipe, a terminal, a socket).
public func isStream(_ path: String) -> Bool {
    var st = stat()
    guard stat(path, &st) == 0 else { return false }
    let kind = st.st_mode & S_IFMT
    return kind == S_IFIFO || kind == S_IFCHR || kind == S_IFSOCK
}

/// The character vocabulary of a corpus: every scalar it holds, sorted.
public func charVocabulary(of paths: [String]) throws -> CharTokenizer {
    var present = [Bool](repeating: false, count: 0x110000)
    try Corpus.scan(paths) { present[Int($0)] = true }
    return try CharTokenizer(scalarsPresent: present)
}
