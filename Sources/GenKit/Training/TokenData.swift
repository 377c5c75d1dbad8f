import GenKernels
import FoundationEssentials
import Glibc

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
    /// encodes any text, with `<|endoftext|>` between files when it has that token; large files are encoded on `threads` threads, 64 MB at a time.
    public init(encoding paths: [String], with tok: Tokenizer, cacheDirectory directory: String,
                skipUnknown: Bool = false, skipped: inout Int, threads: Int = 1) throws {
        width = tok.vocabSize <= 65536 ? 2 : 4
        let path = directory + "/.gen-tokens-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0, let f = fdopen(fd, "w+b") else {
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
            for (k, p) in paths.enumerated() {
                // Documents are separated as GPT-2's were: <|endoftext|> between files.
                if k > 0, let eot = bpe.endOfText { try put(eot) }
                let data = try Corpus.mapValidated(p)
                bytes += data.count
                try data.withUnsafeBytes { raw in
                    let base = raw.bindMemory(to: UInt8.self).baseAddress!
                    var start = 0
                    while start < raw.count {
                        var end = min(raw.count, start + (64 << 20))
                        end = BPETokenizer.safeCut(base, raw.count, near: end)
                        let ids = bpe.encodeParallel(bytes: base + start, count: end - start, threads: threads)
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
        // A short write (a full disk) must not be mapped: reading past the file's end is SIGBUS.
        var st = stat()
        guard fflush(f) == 0, fstat(fileno(f), &st) == 0, Int(st.st_size) == n * w else {
            throw GenError("cannot write the token cache in \(directory): \(String(cString: strerror(errno == 0 ? ENOSPC : errno)))")
        }
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
