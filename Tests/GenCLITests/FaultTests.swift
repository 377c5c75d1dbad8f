import Foundation
import Testing
import GenKit
import TestScratch

/// Each class of fault an adversarial user found, through the binary: nothing the user had is
/// lost or overwritten, nothing crashes, every error is one line.
@Suite struct FaultTests {
    /// A model and a state from different saves are refused; a save cut between its renames
    /// (model renamed, state still at .next) resumes exactly.
    @Test func checkpointPairsMustMatch() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let m = d.appendingPathComponent("m.safetensors").path, u = d.appendingPathComponent("u.safetensors").path
        let common = ["--quiet", "--seed", "3", "--threads", "2", "--steps", "6", "--save-every", "2"] + tinyShape
        #expect(try gen(["train", c, "--out", u] + common).status == 0)
        #expect(try gen(["train", c, "--out", m] + common, env: ["GEN_STOP_AFTER_STEP": "2"]).status == 130)
        let state2 = fileBytes(m + ".state")
        #expect(try gen(["train", c, "--out", m, "--resume"] + common, env: ["GEN_STOP_AFTER_STEP": "4"]).status == 130)
        let state4 = fileBytes(m + ".state")
        // The model at step 4 with the state of step 2: refused, files untouched.
        try state2.write(to: URL(fileURLWithPath: m + ".state"))
        let model4 = fileBytes(m)
        let r = try gen(["train", c, "--out", m, "--resume"] + common)
        #expect(r.status == 1 && r.stderr.contains("not from the same save") && isCleanFailure(r), "\(r.stderr)")
        #expect(fileBytes(m) == model4)
        // As a kill between the renames leaves it: the new state still at .next.
        try state4.write(to: URL(fileURLWithPath: m + ".state.next"))
        let ok = try gen(["train", c, "--out", m, "--resume"] + common)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try SafeTensorsFile(path: m).rawBytes("wte.weight") == (try SafeTensorsFile(path: u).rawBytes("wte.weight")))
        #expect(!FileManager.default.fileExists(atPath: m + ".state.next"))
    }

    /// Links planted where earlier temporary files were named (.OUT.tmp-PID, .gen-stdin-PID)
    /// are never followed: their targets are untouched. (`exec` keeps the shell's PID.)
    @Test func plantedLinksAreNotFollowed() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let target = d.appendingPathComponent("precious.txt").path
        try "precious".write(toFile: target, atomically: true, encoding: .utf8)
        let r = try shell("""
            ln -s precious.txt .m.safetensors.tmp-$$; ln -s precious.txt .m.safetensors.state.tmp-$$; ln -s precious.txt .gen-stdin-$$
            exec "$GEN" train - --out m.safetensors --steps 2 --quiet \(tinyShape.joined(separator: " ")) < \(c)
            """, cwd: d)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "precious")
        #expect(try Checkpoint.load(d.appendingPathComponent("m.safetensors").path).metadata["step"] == "2")
    }

    /// A second run on the same --out fails at once while the first runs.
    @Test func oneRunPerOutput() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let r = try shell("""
            "$GEN" train \(c) --out m.safetensors --steps 100000 --quiet \(tinyShape.joined(separator: " ")) & first=$!
            sleep 1.5
            "$GEN" train \(c) --out m.safetensors --steps 2 --quiet --force \(tinyShape.joined(separator: " "))
            status=$?
            kill -TERM $first; wait $first; echo "first $?"
            exit $status
            """, cwd: d)
        #expect(r.status == 1 && r.stderr.contains("another gen run is writing m.safetensors"), "\(r.stderr)")
        #expect(r.stdout.contains("first 130"), "\(r.stdout)")
    }

    /// Outputs that cannot be written, and inputs named as outputs, are refused before any step.
    @Test func outputsAreCheckedFirstAndInputsNeverWritten() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let before = fileBytes(c)
        try FileManager.default.createDirectory(at: d.appendingPathComponent("dir"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: d.appendingPathComponent("s.safetensors.state"), withIntermediateDirectories: true)
        let ro = d.appendingPathComponent("ro.safetensors").path
        try "old".write(toFile: ro, atomically: true, encoding: .utf8)
        chmod(ro, 0o444)
        let cases: [([String], String)] = [
            (["--out", d.appendingPathComponent("dir").path], "is a folder"),
            (["--out", d.appendingPathComponent("s.safetensors").path], "is a folder"),
            (["--out", ro, "--force"], "is read-only"),
            (["--out", c, "--force"], "is also an input"),
            (["--out", d.appendingPathComponent("x.safetensors").path, "--log", c], "is also an input"),
        ]
        for (args, message) in cases {
            let r = try gen(["train", c, "--steps", "50"] + tinyShape + args)
            #expect(isCleanFailure(r) && r.stderr.contains(message) && !r.stderr.contains("step "), "\(args): \(r.stderr)")
        }
        #expect(fileBytes(c) == before)
        #expect(try String(contentsOfFile: ro, encoding: .utf8) == "old")

        // The files of a folder given as an input (a Hugging Face folder, an adapter folder)
        // are inputs too, even with --force.
        let m = try tinyModel(in: d, steps: 2)
        let hf = d.appendingPathComponent("hf").path, adapter = d.appendingPathComponent("adapter").path
        #expect(try gen(["export", "--from", m, "--hf", hf]).status == 0)
        #expect(try gen(["finetune", c, "--from", m, "--lora", "2", "--steps", "2", "--out", adapter, "--quiet"]).status == 0)
        let weights = hf + "/model.safetensors", config = adapter + "/adapter_config.json"
        let (weightsBefore, configBefore) = (fileBytes(weights), fileBytes(config))
        for args in [["finetune", c, "--from", hf, "--steps", "2", "--out", weights, "--force"],
                     ["merge", "--from", hf, "--adapter", adapter, "--out", weights, "--force"],
                     ["merge", "--from", m, "--adapter", adapter, "--out", config, "--force"]] {
            let r = try gen(args)
            #expect(isCleanFailure(r) && r.stderr.contains("is also an input"), "\(args): \(r.stderr)")
        }
        #expect(fileBytes(weights) == weightsBefore && fileBytes(config) == configBefore)
    }

    /// Output that cannot be written is an error, not a silent exit 0.
    @Test func writeErrorsAreReported() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 2)
        for cmd in ["\"$GEN\" sample -m \(m) -p And -n 5", "\"$GEN\" info \(m)", "echo hi | \"$GEN\" tokenize -m \(m)", "\"$GEN\" --help"] {
            let r = try shell(cmd + " > /dev/full")
            #expect(r.status == 1 && r.stderr.contains("cannot write to standard output"), "\(cmd): \(r.stderr)")
        }
        // A log that cannot be written is said once; the run goes on and saves its model.
        let out = d.appendingPathComponent("logged.safetensors").path
        let r = try gen(["train", corpus(in: d), "--steps", "3", "--out", out, "--log", "/dev/full", "--quiet"] + tinyShape)
        #expect(r.status == 0 && FileManager.default.fileExists(atPath: out), "\(r.stderr)")
        #expect(r.stderr == "warning: cannot write --log /dev/full: No space left on device; the run goes on without its log\n", "\(r.stderr)")
        // --log - is standard output: one JSON object a line, every step and the evaluation.
        let piped = try gen(["train", corpus(in: d), "--steps", "3", "--eval-every", "3", "--out", d.appendingPathComponent("piped").path,
                             "--log", "-", "--quiet"] + tinyShape)
        let lines = piped.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(piped.status == 0 && lines.count == 4 && lines.allSatisfy { $0?["step"] != nil } && lines[3]?["val_loss"] != nil, "\(piped.stdout)")
        // "-" is never a file gen writes: each writer refuses it, and no file named - appears.
        let model = m
        for (args, message) in [(["train", corpus(in: d), "--out", "-"] + tinyShape, "--out -: gen writes a file here"),
                                (["finetune", "--from", model, corpus(in: d), "--out", "-", "--lora", "2"], "--out -: gen writes a folder here"),
                                (["export", "--from", model, "--hf", "-"], "--hf -: gen writes a folder here"),
                                (["tokenizer", "train", corpus(in: d), "--out", "-"], "--out -: gen writes a file here"),
                                (["review", corpus(in: d), "--from", model, "--judge", "echo 1", "--out", "-"], "--out -: gen writes a file here")] {
            let r = try gen(args, cwd: d)
            #expect(r.status == 64 && r.stderr.hasPrefix("Error: \(message), not to standard output"), "\(args): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: d.appendingPathComponent("-").path))
    }

    /// Sizes at their edges: refused up front with one line, never a crash or a hang.
    @Test(arguments: [
        ["train", "C", "--context", "1000000000000000000"],
        ["train", "C", "--layers", "100000000"],
        ["train", "C", "--embd", "10000000000", "--heads", "1"],
        ["train", "C", "--tokenizer", "bpe", "--vocab-size", "9223372036854775807"],
        ["train", "C", "--batch", "1000000000000000000"],
        ["bench", "--batch", "1000000000000000000"],
        ["bench", "--batch", "1e18"],
        ["bench", "--vocab", "9223372036854775807"],
        ["bench", "--embd", "10000000000"],
        ["bench", "--context", "3037000500", "--layers", "1", "--embd", "1", "--heads", "1"],
        ["train", "C", "--embd", "9223372036854775807", "--heads", "1"],   // 4 × embd overflowed
        ["bench", "--embd", "9223372036854775807", "--heads", "1"],
        ["bench", "--steps", "9223372036854775807"],                       // a time kept per step
    ])
    func sizesAreCheckedFirst(args: [String]) throws {
        let d = tempDir()
        let c = corpus(in: d)
        let start = Date()
        let r = try gen(args.map { $0 == "C" ? c : $0 } + ["--out", d.appendingPathComponent("m").path].filter { _ in args[0] == "train" })
        #expect(isCleanFailure(r), "\(args): \(r.stderr)")
        #expect(Date().timeIntervalSince(start) < 10)
    }

    /// Counts near 2⁶³ that used to overflow in a step: a warmup longer than the run trains (the
    /// learning rate barely above 0), a preference batch that large is refused for its memory.
    @Test func hugeCountsTrainOrAreRefused() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 2)
        var r = try gen(["train", corpus(in: d), "--out", d.appendingPathComponent("w").path, "--steps", "2",
                         "--warmup", "9223372036854775807", "--quiet"] + tinyShape)
        #expect(r.status == 0, "\(r.stderr)")
        let pairs = d.appendingPathComponent("pairs.jsonl").path
        try #"{"prompt":"And","chosen":" God","rejected":" the"}"#.write(toFile: pairs, atomically: true, encoding: .utf8)
        r = try gen(["prefer", "--from", m, pairs, "--out", d.appendingPathComponent("p").path, "--batch", "9223372036854775807", "--quiet"])
        #expect(isCleanFailure(r) && r.stderr.contains("memory"), "\(r.stderr)")
    }

    /// Tokenizer files with ids outside their vocabulary are refused, whatever the id.
    @Test(arguments: ["-1", "2147483647", "2147483648", "99999999999"])
    func craftedTokenizerIDs(id: String) throws {
        let d = tempDir()
        let good = try String(contentsOf: repoRoot.appendingPathComponent("Tests/GenKitTests/Fixtures/bpe_gpt2.tokenizer.json"), encoding: .utf8)
        let obj = try JSONSerialization.jsonObject(with: Data(good.utf8)) as! [String: Any]
        var model = obj["model"] as! [String: Any]
        var vocab = model["vocab"] as! [String: Int]
        let key = vocab.first { $0.value == vocab.count - 1 }!.key   // the last merge's result
        vocab[key] = Int(id)!
        model["vocab"] = vocab
        var bad = obj
        bad["model"] = model
        var special = obj
        special["added_tokens"] = [["id": Int(id)!, "content": "<|x|>", "special": true]]
        for (name, o) in [("merge", bad), ("special", special)] {
            let path = d.appendingPathComponent("\(name).json").path
            try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: path))
            let r = try gen(["tokenize", "--from", path], stdin: "hello\n")
            #expect(isCleanFailure(r), "\(name) \(id): \(r.stderr)")
        }
    }

    @Test func foldersAsModelsOrTokenizers() throws {
        let d = tempDir()
        let c = corpus(in: d)
        for args in [["sample", "-m", d.path], ["tokenize", "-m", d.path], ["info", d.path], ["eval", "-m", d.path, c],
                     ["train", c, "--tokenizer", d.path, "--out", d.appendingPathComponent("m").path]] {
            let r = try gen(args)
            #expect(isCleanFailure(r) && r.stderr.contains("is a folder"), "\(args): \(r.stderr)")
        }
        // A device or a pipe as a model: named as such (gen maps model files).
        for args in [["info", "/dev/null"], ["sample", "-m", "/dev/zero"]] {
            let r = try gen(args)
            #expect(isCleanFailure(r) && r.stderr.contains("is not a model file (a device, pipe or socket"), "\(args): \(r.stderr)")
        }
        let r = try shell("exec bash -c '\"$GEN\" info <(cat \(try tinyModel(in: d, steps: 2)))'")
        #expect(isCleanFailure(r) && r.stderr.contains("is not a model file"), "\(r.stderr)")
    }

    /// `gen train` on the first `characters` of data/kjv.txt (c.txt in `d`) for `steps` steps
    /// into m.safetensors, under a file-size limit of `kilobytes` (as a full disk).
    func trainUnderFileLimit(_ d: URL, kilobytes: Int, characters: Int, steps: Int) throws -> RunResult {
        let text = try String(contentsOf: repoRoot.appendingPathComponent("data/kjv.txt"), encoding: .utf8)
        try String(text.utf8.prefix(characters))!.write(toFile: d.appendingPathComponent("c.txt").path, atomically: true, encoding: .utf8)
        return try run("/bin/bash", ["-c", "ulimit -f \(kilobytes); exec \"$GEN\" train c.txt --out m.safetensors --steps \(steps) --quiet --val-fraction 0 \(tinyShape.joined(separator: " "))"],
                       cwd: d, env: ["GEN": genBinary])
    }

    /// A write that fails (here a file-size limit, as a full disk) while caching tokens is an
    /// error, never a SIGBUS on a short mapping. 60,000 characters make a 120,000-byte cache;
    /// a limit of 116 KB lets the page-aligned bulk through and fails the buffered tail.
    @Test func failedTokenCacheWrite() throws {
        let r = try trainUnderFileLimit(tempDir(), kilobytes: 116, characters: 60_000, steps: 20)
        #expect(isCleanFailure(r) && r.stderr.contains("token cache"), "\(r.status) \(r.stderr)")
    }

    /// A model file cut short by a file-size limit (as a full disk), here after its first 40 KB
    /// of about 115 KB were written in one go, is an error that names it, and leaves no model and
    /// no temporary file behind.
    @Test func failedModelWrite() throws {
        let d = tempDir()
        let r = try trainUnderFileLimit(d, kilobytes: 40, characters: 20_000, steps: 2)
        #expect(isCleanFailure(r) && r.stderr.contains("cannot write m.safetensors: File too large"), "\(r.status) \(r.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: d.path)
        #expect(left == ["c.txt"], "\(left)")
    }

    /// SIGTERM saves as Ctrl-C does. The signal goes once the log shows a finished step (on a
    /// busy machine a fixed wait could send it before gen has started).
    @Test func sigtermSaves() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let r = try shell("""
            "$GEN" train \(c) --out m.safetensors --steps 100000 --quiet --log log \(tinyShape.joined(separator: " ")) & p=$!
            \(waitFor("grep -q step log")); kill -TERM $p; wait $p; echo "status $?"
            """, cwd: d)
        #expect(r.stdout.contains("status 130"), "\(r.stdout) \(r.stderr)")
        let step = Int(try Checkpoint.load(d.appendingPathComponent("m.safetensors").path).metadata["step"] ?? "0") ?? 0
        #expect(step > 0)
    }

    /// A second signal ends a step that would take too long (here a step of 10⁸ micro-batches):
    /// the first is acknowledged, the second kills gen as the signal's default would, and
    /// nothing half-written is left. Each signal waits for a sign: SIGTERM among the signals
    /// the process catches (SigCgt in /proc, bit 15), then the acknowledgement on stderr.
    @Test func secondSignalStopsAtOnce() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let r = try shell("""
            "$GEN" train \(c) --out m.safetensors --steps 2 --accum 100000000 \(tinyShape.joined(separator: " ")) 2>err & p=$!
            \(waitFor("v=$(awk '/SigCgt/ {print $2}' /proc/$p/status) && [ $((0x$v & 0x4000)) -ne 0 ]")); kill -TERM $p
            \(waitFor("grep -q '^stopping after' err")); kill -TERM $p; wait $p; echo "status $?"
            """, cwd: d)
        #expect(r.stdout.contains("status 143"), "\(r.stdout) \(r.stderr)")
        let err = try String(contentsOf: d.appendingPathComponent("err"), encoding: .utf8)
        #expect(err.hasSuffix("\nstopping after this step, then saving (again to stop at once)\n"), "\(err)")
        let left = try FileManager.default.contentsOfDirectory(atPath: d.path).filter { $0.hasPrefix("m.") || $0.hasPrefix(".m.") }
        #expect(left.allSatisfy { $0 == ".m.safetensors.lock" }, "\(left)")
    }

    /// A shell loop that waits until `condition` holds, for at most a minute.
    func waitFor(_ condition: String) -> String {
        "for i in $(seq 600); do \(condition) && break; sleep 0.1; done"
    }

    /// A diverging run never saves non-finite weights as its last good checkpoint.
    @Test func divergenceKeepsFiniteWeights() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let m = d.appendingPathComponent("m.safetensors").path
        let r = try gen(["train", c, "--out", m, "--steps", "200", "--save-every", "1", "--lr", "1e6", "--warmup", "0",
                         "--grad-clip", "0", "--quiet"] + tinyShape)
        #expect(isCleanFailure(r) && (r.stderr.contains("loss became") || r.stderr.contains("no longer finite")), "\(r.stderr)")
        if FileManager.default.fileExists(atPath: m) {
            let ck = try Checkpoint.load(m)
            #expect(ck.model.parameters.array.allSatisfy { $0.isFinite })
        }
    }

    /// Messages about standard input and pipes name them, not internal files.
    @Test func streamsAreNamed() throws {
        let d = tempDir()
        let c = corpus(in: d)
        var r = try gen(["train", "-", "--out", d.appendingPathComponent("e").path] + tinyShape, stdin: "")
        #expect(isCleanFailure(r) && r.stderr == "Error: standard input is empty\n", "\(r.stderr)")
        r = try shell("\"$GEN\" tokenize -m x --count <&-")
        #expect(r.status == 1 && !r.stderr.contains("NSCocoaErrorDomain"), "\(r.stderr)")
        // A pipe corpus (read twice: vocabulary, then tokens) trains.
        r = try shell("exec bash -c '\"$GEN\" train <(cat \(c)) --out p.safetensors --steps 2 --quiet \(tinyShape.joined(separator: " "))'", cwd: d)
        #expect(r.status == 0, "\(r.stderr)")
        r = try shell("printf 'ab\\377' | \"$GEN\" train - --out q --steps 2 \(tinyShape.joined(separator: " "))", cwd: d)
        #expect(isCleanFailure(r) && r.stderr.contains("standard input is not valid UTF-8"), "\(r.stderr)")
        // A stream is checked as it is copied: binary input is refused at once, not spooled
        // until the disk fills; a bad byte past many partial reads of characters of 1 to 4
        // bytes is named at its offset in the stream, as in a file.
        let start = Date()
        r = try gen(["train", "/dev/zero", "--out", d.appendingPathComponent("z").path] + tinyShape)
        #expect(isCleanFailure(r) && r.stderr == "Error: /dev/zero holds a NUL byte at offset 0: it looks like a binary file, not text\n", "\(r.stderr)")
        #expect(Date().timeIntervalSince(start) < 10)
        let text = Data(String(repeating: "aé€😀\n", count: 150_000).utf8)   // 1.65 MB
        for (bad, why) in [([UInt8]([0xFF]), "byte 0xFF at offset \(text.count) (invalid start byte)"),
                           ([0x61, 0xF0, 0x9F, 0x98], "byte 0xF0 at offset \(text.count + 1) (its character is cut off at the end)")] {
            r = try gen(["train", "-", "--out", d.appendingPathComponent("u").path] + tinyShape, stdinData: text + Data(bad))
            #expect(isCleanFailure(r) && r.stderr == "Error: standard input is not valid UTF-8: \(why)\n", "\(r.stderr)")
        }
        r = try gen(["tokenizer", "train", "-", "--out", d.appendingPathComponent("u.json").path, "--vocab-size", "260", "--quiet"], stdinData: text)
        #expect(r.status == 0, "\(r.stderr)")
        // Standard input counted in parts stops at a sixteenth of the memory when nothing
        // cuts it (no line ends after a letter).
        let m = try tinyModel(in: d, steps: 2)
        r = try shell("\"$GEN\" tokenize -m \(m) --count < /dev/zero")
        #expect(isCleanFailure(r) && r.stderr.hasPrefix("Error: standard input holds more than "), "\(r.stderr)")
    }
}
