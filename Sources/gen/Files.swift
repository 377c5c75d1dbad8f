import FoundationEssentials
import Glibc
import GenKit

/// Corpus arguments as readable paths: standard input ("-") and pipes (`<(cat a.txt)`), which
/// can be read only once, are first copied to unlinked files in `folder`.
final class CorpusFiles {
    let paths: [String]
    private let spools: [SpooledStream]

    init(_ arguments: [String], folder: String) throws {
        var spools: [SpooledStream] = []
        var stdinSpool: SpooledStream?
        var paths: [String] = []
        for a in arguments {
            if a == "-" {
                if stdinSpool == nil { stdinSpool = try SpooledStream(reading: 0, name: "standard input", into: folder) }
                paths.append(stdinSpool!.path)
            } else if isStream(a) {
                let fd = open(a, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw GenError("cannot read \(a): \(String(cString: strerror(errno)))") }
                defer { close(fd) }
                let s = try SpooledStream(reading: fd, name: a, into: folder)
                spools.append(s)
                paths.append(s.path)
            } else {
                paths.append(a)
            }
        }
        if let stdinSpool { spools.append(stdinSpool) }
        self.paths = paths
        self.spools = spools
    }

    /// `error` with the spool files' internal names replaced by what the user gave.
    func named(_ error: Error) -> Error {
        guard var e = error as? GenError else { return error }
        for s in spools { e.message = e.message.replacing(s.path, with: s.name) }
        return e
    }
}

/// Refuses "-" as a file gen writes: its outputs are files it renames into place, reads back or
/// writes beside (a state file), never standard output; a file named "-" is still ./- away.
func refuseStandardOutput(_ path: String, flag: String = "--out", folder: Bool = false) throws {
    let what = folder ? "a folder" : "a file"
    if path == "-" {
        throw GenError.usage("\(flag) -: gen writes \(what) here, not to standard output; name \(what) (./- for one named -)")
    }
}

/// Refuses a command whose --out (or any file in `written`, all of them named by --out) is one of
/// its inputs, whatever path names it (`gen review`, `gen tokenizer train`; training runs have
/// `RunOutputs`), or is "-".
func refuseInputAsOutput(_ out: String, written: [String], inputs: [String]) throws {
    try refuseStandardOutput(out)
    for input in inputs {
        if let id = fileIdentity(input), written.contains(where: { fileIdentity($0).map { $0 == id } ?? false }) {
            throw GenError("--out \(out) is also an input (\(input)); choose another file")
        }
    }
}

/// Identity of an existing file (device and inode), to tell when two paths name one file.
func fileIdentity(_ path: String) -> (UInt64, UInt64)? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return (UInt64(st.st_dev), UInt64(st.st_ino))
}

/// True for an existing file without any write permission bit.
func isReadOnly(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && st.st_mode & 0o222 == 0
}

func isFolder(_ path: String) -> Bool {
    var isDir = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir
}

/// Everything a training run will write, checked before any work and locked for the run's
/// length: the model file, its state, the log. Inputs are never written.
final class RunOutputs {
    let out: String
    let folder: String
    private var lock: OutputLock?

    /// - Parameters:
    ///   - inputs: files the run reads (corpora, the model finetuned, a tokenizer file), or
    ///     folders (a Hugging Face or adapter folder), whose every file is an input.
    ///   - replace: an existing model may be replaced (--force); `resume` continues it.
    ///   - adapterFolder: the output is a PEFT adapter folder (created here), not a model file.
    init(out: String, log: String?, inputs: [String], replace: Bool, resume: Bool, adapterFolder: Bool = false) throws {
        try refuseStandardOutput(out, folder: adapterFolder)
        let log = log == "-" ? nil : log   // standard output: no file to keep apart
        self.out = out
        folder = Paths.folder(of: out)
        let statePath = adapterFolder ? out + "/training_state.safetensors" : out + ".state"
        guard isFolder(folder) else { throw GenError("cannot write \(out): the folder \(folder) does not exist") }
        guard access(folder, W_OK) == 0 else { throw GenError("cannot write \(out): the folder \(folder) is not writable") }
        if adapterFolder {
            if FileManager.default.fileExists(atPath: out) && !isFolder(out) { throw GenError("--out \(out) is a file; an adapter run writes a folder") }
        } else {
            for (path, what) in [(out, "--out"), (statePath, "the state file")] where isFolder(path) {
                throw GenError("\(what) \(path) is a folder; choose another --out")
            }
        }
        // Inputs are never written: not by the model, its state or the log. A folder given as an
        // input (a Hugging Face or adapter folder) is read file by file: each of its files is one.
        let written = [(out, "--out"), (statePath, "the state file of --out")] + (log.map { [($0, "--log")] } ?? [])
        let inputFiles = inputs.flatMap { input in
            [input] + (isFolder(input) ? ((try? FileManager.default.contentsOfDirectory(atPath: input)) ?? []).sorted().map { input + "/" + $0 } : [])
        }
        for input in inputFiles {
            guard let id = fileIdentity(input) else { continue }
            for (path, what) in written where fileIdentity(path).map({ $0 == id }) ?? false {
                throw GenError("\(what) \(path) is also an input of this run (\(input)); gen never writes its inputs: choose another file")
            }
        }
        if let log, let id = fileIdentity(log), [out, statePath].contains(where: { fileIdentity($0).map { $0 == id } ?? false }) {
            throw GenError("--log \(log) is the model or its state file; choose another log file")
        }
        if let log, isFolder(log) { throw GenError("--log \(log) is a folder") }
        lock = try OutputLock(out)
        let fm = FileManager.default
        if resume {
            guard fm.fileExists(atPath: out) else { throw GenError("cannot resume: \(out) does not exist") }
        } else if fm.fileExists(atPath: out) && !replace {
            throw GenError("\(out) already exists; pass --resume to continue its training, --force to replace it, or choose another --out")
        }
        // By the mode bits, not access(): root may write anything, but a file marked
        // read-only was marked so by someone.
        for path in [out, statePath] where isReadOnly(path) {
            throw GenError("\(path) is read-only; gen will not replace it (make it writable, or choose another --out)")
        }
        if adapterFolder && !fm.fileExists(atPath: out) {
            do { try fm.createDirectory(atPath: out, withIntermediateDirectories: false) } catch {
                throw GenError("cannot create \(out): \(describe(error))")
            }
        }
        removeLeftovers()
    }

    /// Temporary files of saves that a kill interrupted (only ours: `.NAME.tmp-…`).
    private func removeLeftovers() {
        let prefixes = [out, out + ".state"].map { "." + Paths.fileName(of: $0) + ".tmp-" }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where prefixes.contains(where: name.hasPrefix) {
            unlink(folder + "/" + name)
        }
    }
}

/// A run's lock on its --out (`.NAME.lock` beside it, held with flock for the run's length): a
/// second run on the same output fails at once; a killed run's lock file is taken over.
final class OutputLock {
    let out: String
    private let path: String
    private var fd: Int32 = -1

    init(_ out: String) throws {
        self.out = out
        path = Paths.folder(of: out) + "/." + Paths.fileName(of: out) + ".lock"
        try take()
    }

    private func take() throws {
        let fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GenError("cannot lock \(out) (\(path)): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw GenError("another gen run is writing \(out); wait for it to end, or choose another --out")
        }
        // The run that held it may have removed the file between our open and our lock.
        var held = stat(), now = stat()
        guard fstat(fd, &held) == 0, stat(path, &now) == 0, held.st_ino == now.st_ino, held.st_dev == now.st_dev else {
            close(fd)
            return try take()
        }
        self.fd = fd
    }

    deinit {
        if fd >= 0 {
            unlink(path)
            close(fd)
        }
    }
}

/// Standard input line by line, without the line's end ("\n" or "\r\n"), each line checked to
/// be UTF-8: an invalid byte is an error naming the line and the byte's offset in it
/// (`Corpus.text`), never a silent U+FFFD (as Swift's `readLine` would make it).
final class InputLines {
    private var buffer: UnsafeMutablePointer<CChar>?
    private var capacity = 0
    private(set) var number = 0

    deinit { free(buffer) }

    /// The next line, or nil at the end of the input.
    func next() throws -> String? {
        let n = getline(&buffer, &capacity, stdin)
        guard n >= 0 else {
            if ferror(stdin) != 0 { throw GenError("cannot read standard input: \(String(cString: strerror(errno)))") }
            return nil
        }
        number += 1
        var bytes = UnsafeRawBufferPointer(start: buffer, count: n).bindMemory(to: UInt8.self)
        if bytes.last == UInt8(ascii: "\n") { bytes = UnsafeBufferPointer(rebasing: bytes.dropLast()) }
        if bytes.last == UInt8(ascii: "\r") { bytes = UnsafeBufferPointer(rebasing: bytes.dropLast()) }
        return try Corpus.text(bytes, name: "standard input line \(number)")
    }
}

/// All of standard input.
/// - Throws: `GenError` when it cannot be read (closed, say), or when it holds more than a
///   sixteenth of the machine's memory (what is read whole is then copied and tokenized,
///   several times its size): an endless stream such as /dev/zero stops there instead of
///   exhausting the memory.
func readStandardInput() throws -> Data {
    try readStandardInput(inParts: { _, _ in nil }) { _, _ in }.rest
}

/// Standard input in parts: after each read, `cut(bytes, from)` names where the bytes held so
/// far may end a part (searching from `from`, the first byte not searched before), or nil to
/// read on; `body` gets each part and its offset in the stream. Returns what no cut ended (all
/// of the input when `cut` never cuts) and its offset. Only what no cut has ended is held.
/// - Throws: `GenError` as `readStandardInput()` does, when more than a sixteenth of the
///   machine's memory would be held at once.
func readStandardInput(inParts cut: (UnsafeBufferPointer<UInt8>, _ from: Int) -> Int?,
                       _ body: (UnsafeBufferPointer<UInt8>, _ offset: Int) throws -> Void) throws -> (rest: Data, offset: Int) {
    let limit = Int(Machine.memoryBytes / 16)
    let step = 1 << 20
    var held = Data()   // bytes read and not yet handed on; its first is at `offset` in the stream
    var offset = 0
    while true {
        let old = held.count
        held.append(contentsOf: repeatElement(0, count: step))
        let n = held.withUnsafeMutableBytes { read(0, $0.baseAddress! + old, step) }
        let error = errno
        held.removeLast(step - max(n, 0))
        if n < 0 {
            if error == EINTR { continue }
            throw GenError("cannot read standard input: \(error == EBADF ? "it is closed" : String(cString: strerror(error)))")
        }
        if n == 0 { return (held, offset) }
        let c = held.withUnsafeBytes { raw -> Int? in
            let bytes = raw.bindMemory(to: UInt8.self)
            guard let c = cut(bytes, old), c > 0 else { return nil }
            return c
        }
        if let c {
            try held.withUnsafeBytes { try body(UnsafeBufferPointer(rebasing: $0.bindMemory(to: UInt8.self)[..<c]), offset) }
            held = held.subdata(in: c..<held.count)   // a fresh buffer of the few bytes left
            offset += c
        }
        if held.count > limit {
            throw GenError(cFormat("standard input holds more than %.2g GB, more than gen reads whole on a machine of %.1f GB; give it in parts",
                                   Double(limit) / 1e9, Machine.memoryBytes / 1e9))
        }
    }
}
