import GenKernels
import FoundationEssentials
import Glibc

/// A safetensors file read into memory: an 8-byte little-endian header length, a JSON header
/// naming each tensor's dtype, shape and byte range, then the raw little-endian data.
public struct SafeTensorsFile {
    public struct Entry: Sendable {
        public var dtype: String
        public var shape: [Int]
        public var begin: Int
        public var end: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let entries: [String: Entry]
    public let metadata: [String: String]
    let bytes: Data
    let dataStart: Int

    public init(path: String) throws {
        var isDir = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw GenError("\(path): no such file")
        }
        if isDir { throw GenError("\(path) is a folder, not a model file") }
        var st = stat()
        if stat(path, &st) == 0 && st.st_mode & S_IFMT != S_IFREG {
            throw GenError("\(path) is not a model file (a device, pipe or socket; gen maps model files, so it needs a file)")
        }
        // Mapped, not read: a model is copied once, from the page cache into its buffer.
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            let why = access(path, R_OK) != 0 ? String(cString: strerror(errno)) : "read error"
            throw GenError("cannot read \(path): \(why)")
        }
        try self.init(data: data, name: path)
    }

    public init(data: Data, name: String) throws {
        bytes = data
        guard data.count >= 8 else {
            throw GenError("\(name): truncated (\(data.count) bytes, not even a safetensors header length)")
        }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
        guard n <= UInt64(data.count - 8) else {
            throw GenError("\(name): truncated or not a safetensors file (header of \(n) bytes, file of \(data.count))")
        }
        let headerData = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + 8 + Int(n)))
        guard let header = (try? JSON.parse(headerData))?.object else {
            throw GenError("\(name): the safetensors header is not valid JSON")
        }
        dataStart = 8 + Int(n)
        let dataSize = data.count - dataStart
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (key, value) in header {
            if key == "__metadata__" {
                guard let dict = value.object else {
                    throw GenError("\(name): __metadata__ is not a map of strings")
                }
                for (k, v) in dict {
                    guard let s = v.string else { throw GenError("\(name): metadata \(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value.object, let dtype = info["dtype"]?.string,
                  let shape = info["shape"]?.ints, let offsets = info["data_offsets"]?.ints,
                  offsets.count == 2 else {
                throw GenError("\(name): tensor \(key) has a malformed header entry")
            }
            guard offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataSize else {
                throw GenError("\(name): tensor \(key) lies outside the file (bytes \(offsets[0])..<\(offsets[1]) of \(dataSize)); the file is truncated or damaged")
            }
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw GenError("\(name): tensor \(key) has a negative dimension")
            }
            // The element count, without overflow: it cannot exceed the bytes given.
            var count = 1
            for d in shape {
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow, p <= dataSize else {
                    throw GenError("\(name): tensor \(key) has \(offsets[1] - offsets[0]) bytes for shape \(shape) of \(dtype)")
                }
                count = p
            }
            let e = Entry(dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
            if let size = Self.dtypeSize(dtype), count * size != offsets[1] - offsets[0] {
                throw GenError("\(name): tensor \(key) has \(offsets[1] - offsets[0]) bytes for shape \(shape) of \(dtype)")
            }
            entries[key] = e
        }
        self.entries = entries
        self.metadata = metadata
    }

    static func dtypeSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F32", "I32", "U32": return 4
        case "F64", "I64", "U64": return 8
        case "F16", "BF16", "I16", "U16": return 2
        case "I8", "U8", "BOOL": return 1
        default: return nil
        }
    }

    /// Copies tensor `name` (F32, or F16 or BF16 converted to F32) into `destination`, which
    /// must hold exactly its elements.
    /// With `transposing` (K, N) and a scratch of `count` floats, the (K,N) tensor is stored
    /// transposed, (N,K). F32 data is copied (or transposed) by the pool's threads.
    public func copyFloats(_ name: String, into destination: UnsafeMutablePointer<Float>, count: Int,
                           transposing shape: (K: Int, N: Int)? = nil, scratch: UnsafeMutablePointer<Float>? = nil) throws {
        let e = try checkFloats(name, count: count)
        if let shape, let scratch {
            // F32 data on a 4-byte boundary is transposed straight from the file.
            let direct = e.dtype == "F32" && bytes.withUnsafeBytes { raw in
                let src = raw.baseAddress! + dataStart + e.begin
                guard Int(bitPattern: src) % 4 == 0 else { return false }
                Matmul.transpose(destination, src.assumingMemoryBound(to: Float.self), K: shape.K, N: shape.N)
                return true
            }
            if !direct {
                try copyFloats(name, into: scratch, count: count)
                Matmul.transpose(destination, scratch, K: shape.K, N: shape.N)
            }
            return
        }
        bytes.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + e.begin
            switch e.dtype {
            case "F16":
                for i in 0..<count { destination[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case "BF16":
                for i in 0..<count { destination[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            default:
                parallelCopy(UnsafeMutableRawPointer(destination), src, bytes: count * 4)
            }
        }
    }

    /// Tensor `name`'s values where they lie in the file, when they are `count` F32 values on a
    /// 4-byte boundary (nil: another type, or unaligned). Valid while `bytes` lives (a mapped
    /// file, or data on the heap; a file of tensors is never small enough for Data to hold it
    /// inline).
    func floatsInPlace(_ name: String, count: Int) throws -> UnsafePointer<Float>? {
        let e = try checkFloats(name, count: count)
        guard e.dtype == "F32" else { return nil }
        return bytes.withUnsafeBytes { raw in
            let p = raw.baseAddress! + dataStart + e.begin
            return Int(bitPattern: p) % 4 == 0 ? p.assumingMemoryBound(to: Float.self) : nil
        }
    }

    /// Where the file's bytes begin in memory (which mapping they are).
    var baseAddress: UnsafeRawPointer? { bytes.withUnsafeBytes { $0.baseAddress } }

    /// Tensor `name`'s entry, when it is one `copyFloats` reads into `count` floats.
    @discardableResult
    func checkFloats(_ name: String, count: Int) throws -> Entry {
        guard let e = entries[name] else { throw GenError("missing tensor \(name)") }
        guard ["F32", "F16", "BF16"].contains(e.dtype) else { throw GenError("tensor \(name) is \(e.dtype), expected F32, F16 or BF16") }
        guard e.count == count else { throw GenError("tensor \(name) has \(e.count) elements, expected \(count)") }
        return e
    }

    /// Tensor `name` (F32) as an array.
    public func floats(_ name: String) throws -> [Float] {
        guard let e = entries[name] else { throw GenError("missing tensor \(name)") }
        var out = [Float](repeating: 0, count: e.count)
        try out.withUnsafeMutableBufferPointer { try copyFloats(name, into: $0.baseAddress!, count: e.count) }
        return out
    }

    /// Tensor `name` (F64) as an array.
    public func doubles(_ name: String) throws -> [Double] {
        guard let e = entries[name] else { throw GenError("missing tensor \(name)") }
        guard e.dtype == "F64" else { throw GenError("tensor \(name) is \(e.dtype), expected F64") }
        return bytes.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + e.begin
            return (0..<e.count).map { src.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
        }
    }

    /// Tensor `name` (I32 or I64) as Int32 values.
    public func int32s(_ name: String) throws -> [Int32] {
        guard let e = entries[name] else { throw GenError("missing tensor \(name)") }
        return bytes.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + e.begin
            if e.dtype == "I64" {
                return (0..<e.count).map { Int32(truncatingIfNeeded: src.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
            }
            return (0..<e.count).map { src.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self) }
        }
    }

    /// Raw bytes of tensor `name`.
    public func rawBytes(_ name: String) -> Data? {
        guard let e = entries[name] else { return nil }
        return bytes.subdata(in: (bytes.startIndex + dataStart + e.begin)..<(bytes.startIndex + dataStart + e.end))
    }
}

/// Writes safetensors files atomically: a temporary file in the same folder, fsync, rename.
public struct SafeTensorsWriter {
    public struct Item {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var bytes: UnsafeRawBufferPointer
        public init(name: String, dtype: String = "F32", shape: [Int], bytes: UnsafeRawBufferPointer) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }
    }

    /// The header JSON for `items` in order, padded with spaces so that the data begins on a
    /// 64-byte boundary (the format asks for 8): every tensor whose predecessors' sizes are
    /// multiples of 64 bytes (a model's are, when its width is a multiple of 16) then lies on a
    /// cache line's start, where it can be read in place as fast as from an aligned buffer.
    static func header(_ items: [Item], metadata: [String: String]) -> [UInt8] {
        var s = "{"
        if !metadata.isEmpty {
            s += "\"__metadata__\":{"
            s += metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
            s += "}"
        }
        var offset = 0
        for item in items {
            if s.count > 1 { s += "," }
            let end = offset + item.bytes.count
            s += "\(jsonString(item.name)):{\"dtype\":\"\(item.dtype)\",\"shape\":[\(item.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        s += "}"
        var bytes = Array(s.utf8)
        while (8 + bytes.count) % 64 != 0 { bytes.append(0x20) }
        return bytes
    }

    /// Writes `items` and `metadata` to `path`, replacing it only once the new file is complete
    /// and on disk.
    public static func write(_ items: [Item], metadata: [String: String], to path: String) throws {
        try prepare(items, metadata: metadata, for: path).commit()
    }

    /// Writes `items` and `metadata` completely to a temporary file beside `path`, to be
    /// renamed into place by `commit` (or removed by `discard`).
    static func prepare(_ items: [Item], metadata: [String: String], for path: String) throws -> PendingFile {
        let header = header(items, metadata: metadata)
        var len = UInt64(header.count).littleEndian
        let prefix = withUnsafeBytes(of: &len) { Array($0) } + header
        return try prefix.withUnsafeBytes { p in
            try PendingFile(path, [p] + items.map { $0.bytes })
        }
    }

    /// Writes raw bytes to `path` atomically.
    public static func writeRaw(_ bytes: UnsafeRawBufferPointer, to path: String) throws {
        try PendingFile(path, [bytes]).commit()
    }
}

/// A file written whole beside its destination, fsynced, and only then renamed into place, so
/// that the destination always holds either the old file or the new one. The temporary name is
/// unpredictable and created with O_EXCL|O_NOFOLLOW: a file or link planted there is never
/// followed or overwritten.
struct PendingFile {
    let temporary: String
    let destination: String

    /// The prefix of temporary files for `path` (`.NAME.tmp-`), for cleaning up after a kill.
    static func temporaryPrefix(for path: String) -> String { ".\(Paths.fileName(of: path)).tmp-" }

    init(temporary: String, destination: String) {
        self.temporary = temporary
        self.destination = destination
    }

    init(_ path: String, _ pieces: [UnsafeRawBufferPointer]) throws {
        destination = path
        let dir = Paths.folder(of: path)
        var fd: Int32 = -1
        var name = ""
        for _ in 0..<16 {
            name = dir + "/" + Self.temporaryPrefix(for: path) + String(UInt64.random(in: 0...UInt64.max), radix: 16)
            fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            if fd >= 0 || errno != EEXIST { break }
        }
        guard fd >= 0 else { throw GenError("cannot write \(path): \(String(cString: strerror(errno)))") }
        temporary = name
        var ok = true
        var err: Int32 = 0
        // The pieces go in one writev (IOV_MAX at a time), not a write each: the page cache then
        // holds the file in folios as large as the kernel makes them (2 MB with ext4 on Linux 6.18),
        // not cut at each piece's ends, so that a model read in place maps in huge pages
        // (`Memory.mappedInHugePages`).
        var rest = pieces.filter { $0.count > 0 }[...]
        var skip = 0   // bytes of rest.first written already
        while ok, let first = rest.first {
            let iov = rest.prefix(1024).enumerated().map { i, p in
                let from = i == 0 ? skip : 0
                return iovec(iov_base: UnsafeMutableRawPointer(mutating: p.baseAddress! + from), iov_len: p.count - from)
            }
            var w = writev(fd, iov, Int32(iov.count))
            if w <= 0 { ok = false; err = w < 0 ? errno : ENOSPC; break }
            if w < first.count - skip { skip += w; continue }
            w -= first.count - skip
            skip = 0
            rest = rest.dropFirst()
            while let next = rest.first, w >= next.count { w -= next.count; rest = rest.dropFirst() }
            skip = w
        }
        if ok && fsync(fd) != 0 { ok = false; err = errno }
        if close(fd) != 0 && ok { ok = false; err = errno }
        guard ok else {
            unlink(name)
            throw GenError("cannot write \(path): \(String(cString: strerror(err)))")
        }
    }

    /// Renames the file into place (or to `path`) and makes the rename durable.
    func commit(as path: String? = nil) throws {
        let target = path ?? destination
        guard rename(temporary, target) == 0 else {
            let message = String(cString: strerror(errno))
            unlink(temporary)
            throw GenError("cannot write \(target): \(message)")
        }
        let dfd = open(Paths.folder(of: target), O_RDONLY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    func discard() { unlink(temporary) }
}

/// A JSON string literal for `s`.
public func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                out += cFormat("\\u%04x", u.value)
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
