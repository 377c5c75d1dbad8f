import Foundation
import Testing
import GenKit
import TestScratch

/// `gen review` (with a judge program, and with keys typed on a pseudo-terminal) and
/// `gen prefer` (full and LoRA, resume, bad input), through the binary.
@Suite struct PreferenceCommandTests {
    static func bpeModel(in dir: URL) throws -> String {
        let c = corpus(in: dir)
        let m = dir.appendingPathComponent("bpe.safetensors").path
        let r = try gen(["train", c, "--tokenizer", "bpe", "--vocab-size", "300", "--out", m, "--steps", "30", "--quiet"] + tinyShape)
        precondition(r.status == 0, r.stderr)
        return m
    }

    static func lines(_ path: String) -> [[String: Any]] {
        String(decoding: fileBytes(path), as: UTF8.self).split(separator: "\n").map {
            try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// Review samples from 8-bit weights too (the pairs are written as with fp32).
    @Test func reviewWithInt8Weights() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let m = try Self.bpeModel(in: dir)
        try "In the beginning\nAnd God said\n".write(toFile: dir.appendingPathComponent("prompts.txt").path, atomically: true, encoding: .utf8)
        // The judge runs with SIGPIPE's default action (gen ignores the signal): a pipeline in it ends quietly.
        let r = try gen(["review", "-m", m, "prompts.txt", "-n", "12", "-s", "5", "--out", "prefs.jsonl", "--weights", "int8",
                         "--judge", "yes | head -1 >/dev/null; echo 2"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stderr.contains("Broken pipe"), "\(r.stderr)")
        #expect(Self.lines(dir.appendingPathComponent("prefs.jsonl").path).count == 2)
    }

    @Test func reviewWithAJudgeResumesAfterAFailure() throws {
        let dir = tempDir()
        let m = try Self.bpeModel(in: dir)
        try "In the beginning\nAnd God said\n\nLet there be\nAnd the earth\nAnd Moses\nUnto the LORD\n"
            .write(toFile: dir.appendingPathComponent("prompts.txt").path, atomically: true, encoding: .utf8)
        // Answers 1, tie, skip, 2, then nonsense: the run stops with a clear error, keeping what it wrote.
        try "1\n=\ns\n2\nmaybe\n".write(toFile: dir.appendingPathComponent("answers").path, atomically: true, encoding: .utf8)
        let judge = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; cat >> seen.jsonl; sed -n \"${n}p\" answers"
        let args = ["review", "-m", m, "prompts.txt", "-n", "12", "-s", "5", "--out", "prefs.jsonl"]
        var r = try gen(args + ["--judge", judge], cwd: dir)
        #expect(isCleanFailure(r), "\(r.stderr)")
        #expect(r.stderr.contains("answered 'maybe' on prompt 5") && r.stderr.contains("2 pairs"), "\(r.stderr)")
        let out = dir.appendingPathComponent("prefs.jsonl").path
        var pairs = Self.lines(out)
        let passed = Self.lines(out + ".skipped")
        let seen = Self.lines(dir.appendingPathComponent("seen.jsonl").path)
        #expect(pairs.count == 2 && passed.count == 2 && seen.count == 5)
        #expect(passed.map { $0["decision"] as! String } == ["tie", "skip"])
        // The judge's first answer was 1, its fourth 2: chosen and rejected follow, without the prompt.
        let c0 = seen[0]["completions"] as! [String], c3 = seen[3]["completions"] as! [String]
        #expect(seen[0]["prompt"] as! String == "In the beginning" && pairs[0]["prompt"] as! String == "In the beginning")
        #expect(pairs[0]["chosen"] as! String == c0[0] && pairs[0]["rejected"] as! String == c0[1])
        #expect(pairs[1]["chosen"] as! String == c3[1] && pairs[1]["rejected"] as! String == c3[0])
        #expect(c0[0] != c0[1])

        // Again with the same --out: prompts 5 and 6 only, with the samples the first run made for prompt 5.
        r = try gen(args + ["--judge", "cat >> seen2.jsonl; echo 1"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("4 of 6 prompts already judged"), "\(r.stderr)")
        let seen2 = Self.lines(dir.appendingPathComponent("seen2.jsonl").path)
        #expect(seen2.map { $0["prompt"] as! String } == ["And Moses", "Unto the LORD"])
        #expect(seen2[0]["completions"] as! [String] == seen[4]["completions"] as! [String])
        pairs = Self.lines(out)
        #expect(pairs.count == 4)
        r = try gen(args + ["--judge", "exit 1"], cwd: dir)
        #expect(r.status == 0 && r.stderr.contains("all 6 prompts are judged already"), "\(r.stderr)")

        // A failing judge, a bad --out file, no prompts, temperature 0: one-line errors.
        for bad in [args.filter { $0 != "prefs.jsonl" } + ["other.jsonl", "--judge", "exit 3"],
                    ["review", "-m", m, "prompts.txt", "--out", "answers", "--judge", "echo 1"],
                    ["review", "-m", m, "empty.txt", "--judge", "echo 1"],
                    args + ["--judge", "echo 1", "--temp", "0"]] {
            try "".write(toFile: dir.appendingPathComponent("empty.txt").path, atomically: true, encoding: .utf8)
            r = try gen(bad, cwd: dir)
            #expect(isCleanFailure(r), "\(bad): \(r.stderr)")
        }
        // Two reviews of one --out at once: the second is refused (it would judge the same prompts).
        try "And God said\n".write(toFile: dir.appendingPathComponent("one.txt").path, atomically: true, encoding: .utf8)
        r = try shell("""
            "$GEN" review -m \(m) one.txt -n 4 --out held.jsonl --judge 'sleep 2; echo 1' 2>first & sleep 0.7
            "$GEN" review -m \(m) one.txt -n 4 --out held.jsonl --judge 'echo 2'; echo "second $?"; wait
            """, cwd: dir)
        #expect(r.stdout.contains("second 1") && r.stderr.contains("another gen run is writing held.jsonl"), "\(r.stdout) \(r.stderr)")
        let held = Self.lines(dir.appendingPathComponent("held.jsonl").path)
        #expect(held.count == 1 && held[0]["prompt"] as? String == "And God said", "\(held)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent(".held.jsonl.lock").path))
        // A judge's answer is quoted safely (control characters as \u{…}).
        r = try gen(args.filter { $0 != "prefs.jsonl" } + ["other.jsonl", "--judge", "printf 'x\\033[2Jy'"], cwd: dir)
        #expect(isCleanFailure(r) && r.stderr.contains("the judge answered 'x\\u{1B}[2Jy' on prompt 1"), "\(r.stderr)")
        #expect(String(decoding: fileBytes(dir.appendingPathComponent("answers").path), as: UTF8.self) == "1\n=\ns\n2\nmaybe\n")
    }

    /// Keys on a pseudo-terminal (util-linux `script` gives gen one): 1, an unknown key, =, q;
    /// then s and q on the next run.
    @Test func reviewAtATerminal() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }
        let dir = tempDir()
        let m = try Self.bpeModel(in: dir)
        try "In the beginning\nAnd God said\nLet there be\n".write(toFile: dir.appendingPathComponent("p.txt").path, atomically: true, encoding: .utf8)
        let command = "'\(genBinary)' review -m '\(m)' p.txt -n 8 -s 3 --out prefs.jsonl"
        var r = try shell("printf '1x=q' | script -qec \"\(command)\" /dev/null", cwd: dir)
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("prompt 1 of 3") && r.stdout.contains("Which is better?"), "\(r.stdout)")
        let out = dir.appendingPathComponent("prefs.jsonl").path
        #expect(Self.lines(out).count == 1 && Self.lines(out + ".skipped").map { $0["decision"] as! String } == ["tie"])
        r = try shell("printf 'sq' | script -qec \"\(command)\" /dev/null", cwd: dir)
        #expect(r.stdout.contains("prompt 3 of 3") && !r.stdout.contains("prompt 1 of 3"), "\(r.stdout)")
        #expect(Self.lines(out).count == 1 && Self.lines(out + ".skipped").map { $0["decision"] as! String } == ["tie", "skip"])
    }

    static func writePairs(in dir: URL, count: Int = 12) -> String {
        var text = ""
        for i in 0..<count {
            let prompt = ["And God said", "In the beginning", "And the LORD spake unto Moses"][i % 3]
            text += "{\"prompt\":\(jsonString(prompt)),\"chosen\":\(jsonString(", saying, Let there be light \(i).")),\"rejected\":\(jsonString(" qq zx vv kk \(i)"))}\n"
        }
        let path = dir.appendingPathComponent("prefs.jsonl").path
        try! text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func preferFullAndLoRA() throws {
        let dir = tempDir()
        let m = try Self.bpeModel(in: dir)
        let prefs = Self.writePairs(in: dir)
        let a = dir.appendingPathComponent("a.safetensors").path, b = dir.appendingPathComponent("b.safetensors").path
        let common = ["prefer", "-m", m, prefs, "--steps", "6", "--batch", "2", "--lr", "1e-3", "--eval-every", "3", "--warmup", "0"]
        var r = try gen(common + ["--out", a, "--log", dir.appendingPathComponent("log.jsonl").path, "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let log = Self.lines(dir.appendingPathComponent("log.jsonl").path)
        for key in ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"] {
            #expect(log.first?[key] != nil, "\(key) in \(log.first ?? [:])")
        }
        #expect(log.contains { $0["val_rewards/margins"] != nil })
        // Stopped after step 3, resumed: the same weights as the run that went through.
        r = try gen(common + ["--out", b, "--quiet"], env: ["GEN_STOP_AFTER_STEP": "3"])
        #expect(r.status == 130, "\(r.stderr)")
        r = try gen(common + ["--out", b, "--resume", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let wa = try Checkpoint.load(a).model.parameters, wb = try Checkpoint.load(b).model.parameters
        #expect(Array(UnsafeBufferPointer(start: wa.pointer, count: wa.count)) == Array(UnsafeBufferPointer(start: wb.pointer, count: wb.count)))
        let w0 = try Checkpoint.load(m).model.parameters
        #expect(Array(UnsafeBufferPointer(start: wa.pointer, count: wa.count)) != Array(UnsafeBufferPointer(start: w0.pointer, count: w0.count)))

        // LoRA: a PEFT folder that sample takes; the base is not written.
        let before = fileBytes(m)
        let lora = dir.appendingPathComponent("ad").path
        r = try gen(common + ["--lora", "4", "--out", lora, "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: lora + "/adapter_model.safetensors"))
        r = try gen(["sample", "-m", m, "--adapter", lora, "-p", "And God", "-n", "5", "-s", "1"])
        #expect(r.status == 0 && r.stdout.hasPrefix("And God"), "\(r.stderr)")
        // Further training of those adapters (--adapter) into another folder.
        r = try gen(common + ["--adapter", lora, "--out", dir.appendingPathComponent("ad2").path, "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(fileBytes(m) == before)

        // Bad input: one line each, nothing written.
        try "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\"}\n{\"prompt\":\"a\",\"chosen\":3}\n"
            .write(toFile: dir.appendingPathComponent("bad.jsonl").path, atomically: true, encoding: .utf8)
        let c = dir.appendingPathComponent("c.safetensors").path
        for (bad, message) in [(["prefer", "-m", m, dir.appendingPathComponent("bad.jsonl").path, "--out", c], "line 2"),
                               (["prefer", "-m", m, prefs, "--beta", "0", "--out", c], "--beta"),
                               (["prefer", "-m", m, prefs, "--lora", "4", "--adapter", lora, "--out", c], "--adapter"),
                               (["prefer", "-m", m, prefs, "--out", a], "already exists")] {
            r = try gen(bad)
            #expect(isCleanFailure(r) && r.stderr.contains(message), "\(bad): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: c))
    }
}
