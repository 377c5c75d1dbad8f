import Foundation
import GenKit
import TestScratch

/// The `gen` binary built beside this test bundle.
let genBinary: String = {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    // The test runner may live inside a .xctest bundle folder.
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent("gen").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return CommandLine.arguments[0].components(separatedBy: "/").dropLast().joined(separator: "/") + "/gen"
}()

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs gen with `args`, feeding `stdin`; waits for it to end.
@discardableResult
func gen(_ args: [String], stdin: String? = nil, stdinData: Data? = nil, cwd: URL? = nil, env: [String: String] = [:]) throws -> RunResult {
    try run(genBinary, args, stdin: stdinData ?? stdin.map { Data($0.utf8) } ?? Data(), cwd: cwd, env: env)
}

/// The first `bytes` bytes of the default corpus (cut at a line end), written into `dir`.
func corpus(in dir: URL, bytes: Int = 60_000, name: String = "corpus.txt") -> String {
    let text = try! String(contentsOf: repoRoot.appendingPathComponent("data/kjv.txt"), encoding: .utf8)
    var cut = String(text.utf8.prefix(bytes))!
    if let nl = cut.lastIndex(of: "\n") { cut = String(cut[...nl]) }
    let path = dir.appendingPathComponent(name).path
    try! cut.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

let tinyShape = ["--layers", "2", "--heads", "2", "--embd", "32", "--context", "32", "--batch", "8"]

/// Trains a tiny model into `dir` and returns its path.
func tinyModel(in dir: URL, steps: Int = 40, extra: [String] = []) throws -> String {
    let c = corpus(in: dir)
    let out = dir.appendingPathComponent("tiny.safetensors").path
    let r = try gen(["train", c, "--out", out, "--steps", String(steps), "--eval-every", "20", "--eval-batches", "4",
                     "--quiet"] + tinyShape + extra)
    precondition(r.status == 0, r.stderr)
    return out
}

/// `prompt` and `n` tokens picked greedily by full forward passes over the last `context`
/// tokens, without a cache: what `gen sample --temperature 0` must print.
func greedyByFullPasses(_ ck: Checkpoint, _ prompt: String, _ n: Int) throws -> String {
    var ids = try ck.tokenizer.encode(prompt)
    let V = ck.model.config.vocabSize, T = ck.model.config.blockSize
    for _ in 0..<n {
        let row = Array(ck.model.logits(Array(ids.suffix(T))).suffix(V))
        var best = 0
        for i in 1..<V where row[i] > row[best] { best = i }
        ids.append(Int32(best))
    }
    return ck.tokenizer.decode(ids)
}

func fileBytes(_ path: String) -> Data { FileManager.default.contents(atPath: path) ?? Data() }

/// Runs `script` with /bin/sh, with $GEN naming the gen binary; stdin is empty.
@discardableResult
func shell(_ script: String, cwd: URL? = nil, env: [String: String] = [:]) throws -> RunResult {
    try run("/bin/sh", ["-c", script], cwd: cwd, env: env.merging(["GEN": genBinary]) { a, _ in a })
}

/// Runs `command` (a shell command line whose last process is the one to measure) in the
/// background and returns its exit status and peak resident size in MB: the process's own
/// high-water mark (VmHWM), read while it runs, so that the test process's other children (run
/// in parallel) do not count.
func peakResidentMB(_ command: String) throws -> (status: Int, peakMB: Int) {
    let r = try shell("""
        \(command) & p=$!
        peak=0
        while kill -0 $p 2>/dev/null; do
          v=$(awk '/VmHWM/ {print $2}' /proc/$p/status 2>/dev/null); [ -n "$v" ] && peak=$v; sleep 0.02
        done
        wait $p; echo "$? $peak"
        """)
    let fields = r.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    guard fields.count == 2 else { throw GenError("cannot measure \(command): \(r.stdout) \(r.stderr)") }
    return (fields[0], fields[1] / 1024)
}

/// Runs a program, feeding it `stdin` (nil: /dev/null); waits for it to end.
func run(_ program: String, _ args: [String], stdin: Data? = nil, cwd: URL? = nil, env: [String: String] = [:]) throws -> RunResult {
    // A child that exits before reading its input (bad arguments) must fail its test, not end
    // the test process by SIGPIPE.
    signal(SIGPIPE, SIG_IGN)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = args
    if let cwd { p.currentDirectoryURL = cwd }
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    p.environment = e
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = stdin == nil ? FileHandle.nullDevice : inp
    try p.run()
    if let stdin {
        DispatchQueue.global().async {
            try? inp.fileHandleForWriting.write(contentsOf: stdin)
            try? inp.fileHandleForWriting.close()
        }
    }
    // Read both pipes concurrently so neither fills up.
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                     stderr: String(decoding: errBox.data, as: UTF8.self))
}

/// No crash report, and one line of error.
func isCleanFailure(_ r: RunResult) -> Bool {
    r.status != 0 && !r.stderr.contains("crashed") && !r.stderr.contains("Fatal error")
        && r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count == 1
}
