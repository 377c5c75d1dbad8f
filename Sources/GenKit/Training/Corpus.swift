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
                    try decode(p.baseAddress!, end, atEOF: false, path: path, offset: offset, body)
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
    static func decode(_ p: UnsafePointer<UInt8>, _ n: Int, atEOF: Bool, path: String, offset: Int,
                       _ body: (UInt32) throws -> Void) throws -> Int {
        var i = 0
        while i < n {
            let b0 = p[i]
            if b0 < 0x80 {
                if b0 == 0 { throw GenError("\(path) holds a NUL byte at byte \(offset + i): it looks like a binary file, not text") }
                try body(UInt32(b0))
                i += 1
                continue
            }
            let len: Int
            var v: UInt32
            var minimum: UInt32
            switch b0 {
            case 0xC2...0xDF: len = 2; v = UInt32(b0 & 0x1F); minimum = 0x80
            case 0xE0...0xEF: len = 3; v = UInt32(b0 & 0x0F); minimum = 0x800
            case 0xF0...0xF4: len = 4; v = UInt32(b0 & 0x07); minimum = 0x10000
            default: throw GenError("\(path) is not valid UTF-8 (byte \(offset + i) is 0x\(String(b0, radix: 16, uppercase: true)))")
            }
            if i + len > n { return i }
            for k in 1..<len {
                let b = p[i + k]
                guard b & 0xC0 == 0x80 else {
                    throw GenError("\(path) is not valid UTF-8 (byte \(offset + i + k) is 0x\(String(b, radix: 16, uppercase: true)))")
                }
                v = v << 6 | UInt32(b & 0x3F)
            }
            guard v >= minimum, v <= 0x10FFFF, !(0xD800...0xDFFF).contains(v) else {
                throw GenError("\(path) is not valid UTF-8 (bad sequence at byte \(offset + i))")
            }
            try body(v)
            i += len
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
            let done = try decode(p, raw.count, atEOF: true, path: path, offset: 0) { _ in }
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

/// A token stream stored compactly (UInt16 when the vocabulary allows, else UInt32) in a
/// memory-mapped file that is unlinked once mapped: nothing is left behind on disk.
public final class TokenData {
    public let count: Int
    public let width: Int
    let base: UnsafeMutableRawPointer?
    let mappedBytes: Int
    /// UTF-8 bytes of the text the tokens came from.
    public let sourceBytes: Int

    @inline(__always)
    public subscript(i: Int) -> Int32 {
        width == 2 ? Int32(base!.load(fromByteOffset: i * 2, as: UInt16.self))
                   : Int32(bitPattern: base!.load(fromByteOffset: i * 4, as: UInt32.self))
    }

    /// Encodes `paths` with `tok` into a cache file in `directory`, then maps it.
    /// With a character tokenizer, unknown characters are an error listing the first few,
    /// unless `skipUnknown` (then `skipped` reports how many were dropped). A BPE tokenizer
    /// encodes any text; large files are encoded on all threads, 64 MB at a time.
    public init(encoding paths: [String], with tok: Tokenizer, cacheDirectory directory: String,
                skipUnknown: Bool = false, skipped: inout Int) throws {
        width = tok.vocabSize <= 65536 ? 2 : 4
        let path = directory + "/.gen-tokens-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard let f = fopen(path, "w+b") else {
            throw GenError("cannot write the token cache in \(directory): \(String(cString: strerror(errno)))")
        }
        // Unlinked at once: the open file lives on until closed, and nothing is left behind
        // even if gen is killed while encoding.
        unlink(path)
        defer { fclose(f) }
        var out = [UInt8](repeating: 0, count: 1 << 20)
        var filled = 0
        var n = 0, bytes = 0
        let w = width
        func flush() throws {
            if filled > 0 && fwrite(out, 1, filled, f) != filled { throw GenError("cannot write the token cache in \(directory): disk full?") }
            filled = 0
        }
        @inline(__always) func put(_ id: Int32) throws {
            if filled + 4 > out.count { try flush() }
            if w == 2 {
                out[filled] = UInt8(id & 0xFF); out[filled + 1] = UInt8(id >> 8)
            } else {
                for k in 0..<4 { out[filled + k] = UInt8((id >> (8 * k)) & 0xFF) }
            }
            filled += w
            n += 1
        }
        if let bpe = tok as? BPETokenizer {
            for p in paths {
                let data = try Corpus.mapValidated(p)
                bytes += data.count
                try data.withUnsafeBytes { raw in
                    let base = raw.bindMemory(to: UInt8.self).baseAddress!
                    var start = 0
                    while start < raw.count {
                        var end = min(raw.count, start + (64 << 20))
                        end = BPETokenizer.safeCut(base, raw.count, near: end)
                        let ids = bpe.encodeParallel(bytes: base + start, count: end - start, threads: Parallel.threads)
                        for id in ids { try put(id) }
                        start = end
                    }
                }
            }
            skipped = 0
        } else if let chars = tok as? CharTokenizer {
            var unknown: [UInt32] = []
            var skippedCount = 0
            try Corpus.scan(paths) { v in
                bytes += v < 0x80 ? 1 : v < 0x800 ? 2 : v < 0x10000 ? 3 : 4
                let id = chars.id(of: v)
                if id < 0 {
                    if skipUnknown { skippedCount += 1; return }
                    if !unknown.contains(v) { unknown.append(v) }
                    return
                }
                try put(id)
            }
            if !unknown.isEmpty {
                let names = unknown.prefix(5).map { describe(Unicode.Scalar($0)!) }.joined(separator: ", ")
                throw GenError("the corpus has characters the model does not know: \(names)\(unknown.count > 5 ? " and \(unknown.count - 5) more" : ""); pass --skip-unknown to drop them")
            }
            skipped = skippedCount
        } else {
            throw GenError("unsupported tokenizer \(tok.kind)")
        }
        try flush()
        fflush(f)
        count = n
        sourceBytes = bytes
        mappedBytes = n * w
        if mappedBytes > 0 {
            let p = mmap(nil, mappedBytes, PROT_READ, MAP_PRIVATE, fileno(f), 0)
            guard let p, p != MAP_FAILED else { throw GenError("cannot map the token cache: \(String(cString: strerror(errno)))") }
            base = p
        } else {
            base = nil
        }
    }

    deinit { if let base, mappedBytes > 0 { munmap(base, mappedBytes) } }
}

/// The character vocabulary of a corpus: every scalar it holds, sorted.
public func charVocabulary(of paths: [String]) throws -> CharTokenizer {
    var present = [Bool](repeating: false, count: 0x110000)
    try Corpus.scan(paths) { present[Int($0)] = true }
    return try CharTokenizer(scalarsPresent: present)
}
