import GenKernels
import Foundation

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
            var isDir = ObjCBool(false)
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
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
                    if carry > 0 { throw GenError("\(path) is not valid UTF-8: a character is cut off at byte \(offset)") }
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
    /// (an unfinished sequence at the end is left for the next chunk).
    @inline(__always)
    static func decode(_ p: UnsafePointer<UInt8>, _ n: Int, path: String, offset: Int,
                       _ body: (UInt32) throws -> Void) throws -> Int {
        var i = 0
        while i < n {
            switch UTF8Decoder.next(p, i, n) {
            case .scalar(let v, let len):
                if v == 0 { throw GenError("\(path) holds a NUL byte at byte \(offset + i): it looks like a binary file, not text") }
                try body(v)
                i += len
            case .incomplete:
                return i
            case .invalid(let k):
                if k == 0 && (0xC2...0xF4).contains(p[i]) {
                    throw GenError("\(path) is not valid UTF-8 (bad sequence at byte \(offset + i))")
                }
                throw GenError("\(path) is not valid UTF-8 (byte \(offset + i + k) is 0x\(String(p[i + k], radix: 16, uppercase: true)))")
            }
        }
        return n
    }

    /// A file mapped into memory, checked to be non-empty valid UTF-8.
    public static func mapValidated(_ path: String) throws -> Data {
        var isDir = ObjCBool(false)
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw GenError("cannot read \(path): No such file or directory")
        }
        if isDir.boolValue { throw GenError("\(path) is a directory, not a text file") }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw GenError("cannot read \(path)")
        }
        if data.isEmpty { throw GenError("\(path) is empty") }
        try data.withUnsafeBytes { raw in
            let p = raw.bindMemory(to: UInt8.self).baseAddress!
            let done = try decode(p, raw.count, path: path, offset: 0) { _ in }
            if done < raw.count { throw GenError("\(path) is not valid UTF-8: a character is cut off at byte \(done)") }
        }
        return data
    }

    /// Copies standard input to a temporary file (so it can be read twice) and returns its path.
    public static func spoolStandardInput(into directory: String) throws -> String {
        let path = directory + "/.gen-stdin-\(getpid())"
        guard let out = fopen(path, "wb") else { throw GenError("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { fclose(out) }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = fread(&buf, 1, buf.count, stdin)
            if n == 0 { break }
            if fwrite(buf, 1, n, out) != n { throw GenError("cannot write \(path): disk full?") }
        }
        return path
    }
}

/// The character vocabulary of a corpus: every scalar it holds, sorted.
public func charVocabulary(of paths: [String]) throws -> CharTokenizer {
    var present = [Bool](repeating: false, count: 0x110000)
    try Corpus.scan(paths) { present[Int($0)] = true }
    return try CharTokenizer(scalarsPresent: present)
}
