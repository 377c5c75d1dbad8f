import Foundation
import Testing
import GenKit
import GenKernels
import TestScratch

@Suite struct HelpAndUsageTests {
    @Test func versionAndHelp() throws {
        let v = try gen(["--version"])
        #expect(v.status == 0 && v.stdout == "0.1.0\n")
        let h = try gen(["--help"])
        #expect(h.status == 0 && h.stdout.contains("USAGE: gen <subcommand>") && h.stdout.contains("SUBCOMMANDS:"))
        for cmd in ["train", "finetune", "sample", "eval", "info", "export", "merge", "bench", "tokenize", "detokenize", "tokenizer train"] {
            let r = try gen(["help"] + cmd.split(separator: " ").map(String.init))
            #expect(r.status == 0 && r.stdout.hasPrefix("OVERVIEW:") && r.stdout.contains("USAGE: gen \(cmd)"), "help \(cmd)")
            #expect(try gen(cmd.split(separator: " ").map(String.init) + ["--help"]).stdout == r.stdout)
        }
        let train = try gen(["train", "-h"]).stdout
        #expect(train.contains("--steps <n>") && train.contains("(default: 2000)") && train.contains("(default: model.safetensors)"))
        #expect(try gen(["help", "sample"]).stdout.contains("written as \\n"))
    }

    @Test(arguments: [
        (["train", "x.txt", "--stpes", "5"], "Error: Unknown option '--stpes'\nDid you mean '--steps'?"),
        (["train", "x.txt", "--steps"], "Error: Missing value for '--steps <n>'"),
        (["train", "x.txt", "--steps", "many"], "Error: The value 'many' is invalid for '--steps <n>': not an integer"),
        (["train", "x.txt", "--steps", "0"], "Error: The value '0' is invalid for '--steps <n>': must be at least 1"),
        (["train", "x.txt", "--lr", "fast"], "Error: The value 'fast' is invalid for '--lr <x>': not a number"),
        (["train"], "Error: Missing expected argument '<corpus> ...'"),
        (["trian"], "Error: Unknown subcommand 'trian'\nDid you mean 'train'?"),
        (["sample", "--prompt", "x"], "Error: Missing expected argument '--from <model>'"),
        (["finetune", "--from", "m.safetensors", "x.txt", "--layers", "8"], "Error: finetune takes the model's shape from --from; '--layers' cannot be changed"),
        (["eval", "--from", "m.safetensors"], "Error: Missing expected argument '<textfile>'"),
        (["info"], "Error: Missing expected argument '<file>'"),
        (["sample", "--from", "m", "--temperature", "-1"], "Error: The value '-1' is invalid for '--temperature <t>': must be at least 0.0"),
        (["train", "x.txt", "--quiet=yes"], "Error: Option '--quiet' takes no value"),
    ] as [([String], String)])
    func usageErrors(args: [String], message: String) throws {
        let r = try gen(args)
        #expect(r.status == 64)
        #expect(r.stderr.hasPrefix(message), "\(r.stderr)")
        #expect(r.stderr.contains("Usage: gen"))
        #expect(r.stdout.isEmpty)
    }
}

/// The typed command line: aliases, subcommand groups, required options and positionals.
@Suite struct CommandLineShapeTests {
    @Test func tokenizerIsASubcommandGroup() throws {
        let h = try gen(["tokenizer", "--help"])
        #expect(h.status == 0 && h.stdout.contains("USAGE: gen tokenizer <subcommand>") && h.stdout.contains("train"), "\(h.stdout)")
        #expect(try gen(["help", "tokenizer"]).stdout == h.stdout)
        let bare = try gen(["tokenizer"])
        #expect(bare.status == 64 && bare.stderr.contains("Missing subcommand"))
        let wrong = try gen(["tokenizer", "trian"])
        #expect(wrong.status == 64 && wrong.stderr.contains("Unknown subcommand 'tokenizer trian'"))
        #expect(try gen(["--help"]).stdout.contains("tokenizer"))
    }

    @Test(arguments: [
        (["info", "a", "b"], "Error: Unexpected argument 'b'"),
        (["eval", "-m", "x", "a", "b"], "Error: Unexpected argument 'b'"),
        (["sample", "-m", "x", "extra"], "Error: Unexpected argument 'extra'"),
        (["sample", "-q"], "Error: Unknown option '-q'"),
        (["sample", "-m", "x", "-p", "a", "-f", "b"], "Error: --prompt and --prompt-file cannot be used together"),
        (["train", "x.txt", "--pattern", "gpt3"], "Error: The value 'gpt3' is invalid for '--pattern <name>': gpt2 or gpt4"),
    ] as [([String], String)])
    func declaredShapesAreEnforced(args: [String], message: String) throws {
        let r = try gen(args)
        #expect(r.status == 64 && r.stderr.hasPrefix(message), "\(r.stderr)")
    }

    /// llama.cpp's and nanoGPT's spellings give the same output as gen's own.
    @Test func aliasesMeanTheSame() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 5)
        let prompt = d.appendingPathComponent("p.txt").path
        try "And God".write(toFile: prompt, atomically: true, encoding: .utf8)
        let long = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "20", "--seed", "3", "--temperature", "0.7"])
        let short = try gen(["sample", "-m", m, "-p", "And God", "-n", "20", "-s", "3", "--temp", "0.7"])
        let file = try gen(["sample", "-m", m, "-f", prompt, "-n", "20", "-s", "3", "--temp=0.7"])
        #expect(long.status == 0 && long.stdout == short.stdout && short.stdout == file.stdout, "\(short.stderr)\(file.stderr)")
        #expect(try gen(["help", "sample"]).stdout.contains("-p, --prompt <text>"))
    }

    /// More threads than cores are capped, with a note.
    @Test func threadsAreCapped() throws {
        let r = try gen(["bench", "--steps", "1", "--warmup", "0", "--threads", "1000", "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(r.status == 0 && (o["threads"] as! Int) <= ProcessInfo.processInfo.activeProcessorCount)
        #expect(r.stderr.contains("--threads 1000 is more than"))
    }

    /// A setting the library refuses is a usage error naming the flag (exit 64).
    @Test func librarySettingErrorsNameTheFlag() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 4, extra: ["--save-every", "2"])
        let c = d.appendingPathComponent("corpus.txt").path
        var r = try gen(["train", c, "--out", m, "--resume", "--steps", "8", "--quiet"] + tinyShape.dropLast(2) + ["--batch", "4"])
        #expect(r.status == 64 && r.stderr.hasPrefix("Error: --batch: "), "\(r.stderr)")
        r = try gen(["train", c, "--out", m, "--resume", "--steps", "4", "--quiet"] + tinyShape)
        #expect(r.status == 64 && r.stderr.hasPrefix("Error: --steps: ") && r.stderr.contains("already done 4 steps"), "\(r.stderr)")
    }
}

@Suite struct CorpusErrorTests {
    @Test func badCorpora() throws {
        let d = tempDir()
        let out = d.appendingPathComponent("m.safetensors").path
        func train(_ path: String) throws -> RunResult { try gen(["train", path, "--out", out, "--steps", "2"] + tinyShape) }

        var r = try train(d.appendingPathComponent("missing.txt").path)
        #expect(r.status == 1 && r.stderr.contains("missing.txt: No such file"), "\(r.stderr)")
        let empty = d.appendingPathComponent("empty.txt").path
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        r = try train(empty)
        #expect(r.status == 1 && r.stderr == "Error: \(empty) is empty\n")
        let binary = d.appendingPathComponent("binary.bin").path
        _ = FileManager.default.createFile(atPath: binary, contents: Data([0x7F, 0x45, 0x4C, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00]))
        r = try train(binary)
        #expect(r.status == 1 && r.stderr.contains("NUL byte at offset 7"), "\(r.stderr)")
        let latin1 = d.appendingPathComponent("latin1.txt").path
        _ = FileManager.default.createFile(atPath: latin1, contents: Data("caf".utf8) + Data([0xE9]) + Data(" au lait\n".utf8))
        r = try train(latin1)
        #expect(r.status == 1 && r.stderr == "Error: \(latin1) is not valid UTF-8: byte 0xE9 at offset 3 (invalid continuation byte)\n", "\(r.stderr)")
        let short = d.appendingPathComponent("short.txt").path
        try "a short text\n".write(toFile: short, atomically: true, encoding: .utf8)
        r = try train(short)
        #expect(r.status == 1 && r.stderr.contains("a context of 32 needs at least 33"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        // Every message is one line.
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    @Test func refusesARunThatCannotFit() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let out = d.appendingPathComponent("m.safetensors").path
        var r = try gen(["train", c, "--out", out, "--batch", "4000", "--context", "1024", "--embd", "512", "--heads", "8"])
        #expect(r.status == 1 && r.stderr.contains("GB of memory") && r.stderr.contains("use a smaller"), "\(r.stderr)")
        r = try gen(["train", c, "--out", out, "--embd", "40000", "--heads", "8", "--layers", "20"])
        #expect(r.status == 64 && r.stderr.contains("the model is too large"), "\(r.stderr)")
        r = try gen(["train", c, "--out", out, "--embd", "30", "--heads", "4"])
        #expect(r.status == 64 && r.stderr.hasPrefix("Error: --embd: the embedding width (30) must be a multiple of the number of heads (4)"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func refusesToOverwrite() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let out = d.appendingPathComponent("m.safetensors").path
        try "precious".write(toFile: out, atomically: true, encoding: .utf8)
        let r = try gen(["train", c, "--out", out, "--steps", "2"] + tinyShape)
        #expect(r.status == 1 && r.stderr.contains("already exists"))
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "precious")
    }
}

@Suite struct TrainingTests {
    @Test func trainsAndLoads() throws {
        let d = tempDir()
        let log = d.appendingPathComponent("log.jsonl").path
        let m = try tinyModel(in: d, steps: 60, extra: ["--log", log, "--lr", "3e-3", "--warmup", "5"])
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let losses = lines.compactMap { line -> Double? in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], o["val_loss"] == nil else { return nil }
            return o["loss"] as? Double
        }
        #expect(losses.count == 60)
        #expect(lines.contains { $0.contains("\"val_loss\"") })
        let first = losses.prefix(5).reduce(0, +) / 5, last = losses.suffix(5).reduce(0, +) / 5
        #expect(last < first - 0.5, "loss \(first) -> \(last)")
        let info = try gen(["info", m, "--json"])
        #expect(info.status == 0)
        let o = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as! [String: Any]
        #expect((o["config"] as! [String: Any])["n_layer"] as? Int == 2)
        // Numbers are JSON numbers.
        #expect(o["step"] as? Int == 60 && o["train_loss"] is Double && o["seed"] as? Int == 1337)
        #expect(o["corpus"] as? String == "corpus.txt")
        let text = try gen(["info", m])
        #expect(text.stdout.contains("2 layers, 2 heads, 32 channels, context 32"))
        // The checkpoint is a safetensors file with GPT-2's names.
        let f = try SafeTensorsFile(path: m)
        #expect(f.entries["h.1.mlp.c_fc.weight"]?.shape == [32, 128])
        #expect(f.metadata["format"] == "pt" && f.metadata["gen_format_version"] == "2")
        #expect(f.metadata["tokenizer"]!.hasPrefix("{\"type\":\"char\",\"vocab\":[\"\\n\",\" \""))
    }

    /// 30 steps, then 30 more with --resume, equal 60 uninterrupted steps bit for bit.
    @Test func resumeIsBitIdentical() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let a = d.appendingPathComponent("a.safetensors").path, b = d.appendingPathComponent("b.safetensors").path
        let common = ["--quiet", "--seed", "7", "--threads", "2", "--eval-every", "20", "--dropout", "0.1"] + tinyShape
        #expect(try gen(["train", c, "--out", a, "--steps", "60"] + common).status == 0)
        // The first run is cut at 30 steps by asking for 60 but saving at 30 and stopping there:
        // train 30 of a 60-step schedule by interrupting is what --resume is for; here the
        // schedule is the same because --steps is the same.
        let first = try gen(["train", c, "--out", b, "--steps", "60", "--save-every", "30"] + common,
                            env: ["GEN_STOP_AFTER_STEP": "30"])
        #expect(first.status == 130, "\(first.stderr)")
        #expect(try SafeTensorsFile(path: b).metadata["step"] == "30")
        let second = try gen(["train", c, "--out", b, "--steps", "60", "--resume"] + common)
        #expect(second.status == 0, "\(second.stderr)")
        let fa = try SafeTensorsFile(path: a), fb = try SafeTensorsFile(path: b)
        for name in fa.entries.keys { #expect(fa.rawBytes(name) == fb.rawBytes(name), "\(name) differs") }
    }

    @Test func interruptSavesALoadableCheckpoint() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let out = d.appendingPathComponent("m.safetensors").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: genBinary)
        p.arguments = ["train", c, "--out", out, "--steps", "100000", "--save-every", "0", "--print-every", "1"] + tinyShape
        let err = Pipe()
        p.standardError = err
        try p.run()
        // Wait for the first steps, then Ctrl-C.
        var seen = ""
        while !seen.contains("step 3/") {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        kill(p.processIdentifier, SIGINT)
        DispatchQueue.global().async { _ = err.fileHandleForReading.readDataToEndOfFile() }
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        let info = try gen(["info", out, "--json"])
        #expect(info.status == 0)
        #expect(FileManager.default.fileExists(atPath: out + ".state"))
        // No temporary files are left behind.
        let left = try FileManager.default.contentsOfDirectory(atPath: d.path).filter { $0.hasPrefix(".") }
        #expect(left.isEmpty, "\(left)")
    }

    @Test func divergenceStopsAndKeepsTheLastGoodCheckpoint() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let out = d.appendingPathComponent("m.safetensors").path
        let r = try gen(["train", c, "--out", out, "--steps", "200", "--save-every", "1", "--lr", "1e9", "--warmup", "0",
                         "--grad-clip", "0", "--quiet"] + tinyShape)
        #expect(r.status == 1)
        #expect(r.stderr.contains("the loss became"), "\(r.stderr)")
        if r.stderr.contains("is kept in") {
            #expect(try gen(["info", out]).status == 0)
        }
    }

    @Test func finetune() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 10)
        let before = fileBytes(m)
        let new = d.appendingPathComponent("new.txt").path
        try String(repeating: "And Moses said unto the LORD, Behold. ", count: 100).write(toFile: new, atomically: true, encoding: .utf8)
        let out = d.appendingPathComponent("ft.safetensors").path
        var r = try gen(["finetune", "--from", m, new, "--out", out, "--steps", "5", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(fileBytes(m) == before)
        #expect(try SafeTensorsFile(path: out).metadata["finetuned_from"] == "tiny.safetensors")
        // Unknown characters: refused, listed, unless skipped.
        let odd = d.appendingPathComponent("odd.txt").path
        try String(repeating: "Moses ☃ said § unto the LORD. ", count: 100).write(toFile: odd, atomically: true, encoding: .utf8)
        let out2 = d.appendingPathComponent("ft2.safetensors").path
        r = try gen(["finetune", "--from", m, odd, "--out", out2, "--steps", "5"])
        #expect(r.status == 1 && r.stderr.contains("'☃' (U+2603)") && r.stderr.contains("--skip-unknown"), "\(r.stderr)")
        r = try gen(["finetune", "--from", m, odd, "--out", out2, "--steps", "5", "--skip-unknown"])
        #expect(r.status == 0 && r.stderr.contains("skipped 200 characters"), "\(r.stderr)")
        r = try gen(["finetune", "--from", m, odd, "--out", m, "--steps", "5"])
        #expect(r.status == 1 && fileBytes(m) == before)
    }
}

@Suite struct CheckpointErrorTests {
    /// Damaged files are refused with a message naming the problem, and nothing is changed.
    @Test func damagedCheckpoints() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 2)
        let good = fileBytes(m)
        func check(_ name: String, _ data: Data, _ message: String) throws {
            let path = d.appendingPathComponent(name).path
            _ = FileManager.default.createFile(atPath: path, contents: data)
            for args in [["info", path], ["sample", "--from", path, "--max-tokens", "3"]] {
                let r = try gen(args)
                #expect(r.status == 1, "\(name)")
                #expect(r.stderr.contains(message), "\(name): \(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1)
            }
            #expect(fileBytes(path) == data)
        }
        try check("truncated.safetensors", good.prefix(good.count - 100), "lies outside the file")
        try check("stub.safetensors", good.prefix(5), "truncated")
        var flipped = good
        flipped[9] ^= 0x20   // inside the JSON header
        try check("flipped.safetensors", flipped, "not valid JSON")
        let header = String(decoding: good[8..<(8 + Int(good[0]) + Int(good[1]) << 8)], as: UTF8.self)
        let bumped = header.replacingOccurrences(of: "\"gen_format_version\":\"2\"", with: "\"gen_format_version\":\"9\"")
        #expect(bumped != header)
        try check("version.safetensors", good.prefix(8) + Data(bumped.utf8) + good.dropFirst(8 + header.utf8.count), "gen format version 9 is not supported")
        let renamed = header.replacingOccurrences(of: "\"ln_f.bias\"", with: "\"ln_f.bies\"")
        try check("missing.safetensors", good.prefix(8) + Data(renamed.utf8) + good.dropFirst(8 + header.utf8.count), "missing tensor ln_f.bias")
        #expect(fileBytes(m) == good)
    }
}

@Suite struct SamplingTests {
    @Test func seedsReproduceAndGreedyIsArgmax() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 40)
        let a = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "40", "--seed", "5"])
        let b = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "40", "--seed", "5"])
        #expect(a.status == 0 && a.stdout == b.stdout && a.stdout.hasPrefix("And God"))
        let greedy = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "40", "--temperature", "0"])
        // The argmax path by full forward passes, without a cache.
        let ck = try Checkpoint.load(m)
        let argmax = try greedyByFullPasses(ck, "And God", 40)
        #expect(greedy.stdout == argmax + "\n")
        // Stop strings end the completion before them.
        let completion = String(greedy.stdout.dropFirst("And God".count).dropLast())
        let stop = String(completion.dropFirst(5).prefix(2))
        let stopped = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "40", "--temperature", "0", "--stop", stop])
        let expected = "And God" + completion[..<completion.range(of: stop)!.lowerBound] + "\n"
        #expect(stopped.stdout == expected)
        // Other settings run and stay reproducible.
        let opts = ["--top-k", "5", "--top-p", "0.9", "--min-p", "0.05", "--repeat-penalty", "1.3", "--seed", "9", "--count", "2"]
        let c1 = try gen(["sample", "--from", m, "--max-tokens", "30"] + opts)
        let c2 = try gen(["sample", "--from", m, "--max-tokens", "30"] + opts)
        #expect(c1.status == 0 && c1.stdout == c2.stdout)
        #expect(c1.stdout.contains("\n---\n"))
    }

    /// --weights int8: held-out perplexity within 1% of fp32's (and not equal: the weights are
    /// rounded), greedy samples are the argmax of the rounded model's full forward passes, and a
    /// precision gen does not have is refused.
    @Test func int8Weights() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(at: d) }
        let m = try tinyModel(in: d, steps: 80)
        let held = corpus(in: d, bytes: 20_000, name: "held.txt")
        func loss(_ extra: [String]) throws -> Double {
            let r = try gen(["eval", "--from", m, held, "--json"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            return json["loss"] as! Double
        }
        let exact = try loss([]), rounded = try loss(["--weights", "int8"])
        #expect(exact != rounded && abs(exp(rounded - exact) - 1) < 0.01, "fp32 \(exact), int8 \(rounded)")
        let greedy = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "30", "--temperature", "0", "--weights", "int8"])
        let ck = try Checkpoint.load(m)
        ck.model.roundToInt8()
        let expected = try greedyByFullPasses(ck, "And God", 30)
        #expect(greedy.status == 0 && greedy.stdout == expected + "\n")
        let bad = try gen(["sample", "--from", m, "--weights", "int4"])
        #expect(bad.status != 0 && bad.stderr.contains("int8") && bad.stdout.isEmpty)
    }

    @Test func unknownPromptCharacter() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 2)
        let r = try gen(["sample", "--from", m, "--prompt", "Moses ☃"])
        #expect(r.status == 1 && r.stderr.contains("does not know the character '☃' (U+2603)") && r.stdout.isEmpty)
    }

    @Test func pipelines() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 20)
        // One completion line per input line, in order.
        let r = try gen(["sample", "--from", m, "--each-line", "--max-tokens", "50", "--seed", "1"], stdin: "And\nGod\nsaid\n")
        #expect(r.status == 0)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 4 && lines[3].isEmpty)
        let json = try gen(["sample", "--from", m, "--each-line", "--max-tokens", "10", "--json", "--seed", "1"], stdin: "And\nGod\n")
        let objects = json.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(objects.map { $0["prompt"] as! String } == ["And", "God"])
        #expect(objects.allSatisfy { $0["tokens"] as? Int == 10 })
        // A line the model cannot encode stops the run, naming the line; the lines before it are out.
        let bad = try gen(["sample", "--from", m, "--each-line", "--max-tokens", "5", "--seed", "1"], stdin: "And\nGod ☃\nsaid\n")
        #expect(bad.status == 1 && bad.stdout.split(separator: "\n").count == 1, "\(bad.stdout)")
        #expect(bad.stderr.hasPrefix("Error: standard input line 2: the model does not know the character '☃'"), "\(bad.stderr)")
        // gen review names the prompt it cannot encode, before judging anything.
        let prompts = d.appendingPathComponent("prompts.txt").path
        try "And\nGod ☃\n".write(toFile: prompts, atomically: true, encoding: .utf8)
        let rv = try gen(["review", prompts, "--from", m, "--judge", "echo 1", "--out", d.appendingPathComponent("rv.jsonl").path])
        #expect(rv.status == 1 && rv.stderr.hasPrefix("Error: prompt 2 of 2: the model does not know the character '☃'"), "\(rv.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d.appendingPathComponent("rv.jsonl").path))
        // A line that is not UTF-8 is refused, naming the line and the byte (never turned into U+FFFD).
        for args in [["tokenize", "--from", m], ["sample", "--from", m, "--each-line", "--max-tokens", "2"]] {
            let r = try gen(args, stdinData: Data("And\nGod \u{E9}".utf8) + Data([0xE2, 0x82, 0x0A]))
            #expect(r.status == 1 && r.stderr == "Error: standard input line 2 is not valid UTF-8: byte 0xE2 at offset 6 (its character is cut off at the end)\n", "\(args): \(r.stderr)")
        }
        // Every other input that must be UTF-8 says the same of its bad byte: a prompt file,
        // a prompt on standard input, all of standard input to count, review's prompts.
        let latin = d.appendingPathComponent("latin.txt").path
        _ = FileManager.default.createFile(atPath: latin, contents: Data("And G".utf8) + Data([0xE9, 0x64]))
        let why = "is not valid UTF-8: byte 0xE9 at offset 5 (invalid continuation byte)\n"
        for (args, stdin, name) in [(["sample", "--from", m, "--prompt-file", latin], nil, latin),
                                    (["sample", "--from", m, "--prompt-file", "-"], latin, "the prompt on standard input"),
                                    (["tokenize", "--from", m, "--count"], latin, "standard input"),
                                    (["review", latin, "--from", m, "--judge", "echo 1", "--out", d.appendingPathComponent("l.jsonl").path], nil, latin)] {
            let r = try gen(args, stdinData: try stdin.map { try Data(contentsOf: URL(fileURLWithPath: $0)) })
            #expect(r.status == 1 && r.stderr == "Error: \(name) \(why)", "\(args): \(r.stderr)")
        }
        // Prompt from standard input.
        let s = try gen(["sample", "--from", m, "--max-tokens", "5", "--seed", "1"], stdin: "Moses")
        #expect(s.stdout.hasPrefix("Moses"))
        // The same named as --prompt-file - gives the same sample.
        #expect(try gen(["sample", "--from", m, "--max-tokens", "5", "--seed", "1", "--prompt-file", "-"], stdin: "Moses").stdout == s.stdout)
        // Training from standard input, then eval from standard input.
        let text = try String(contentsOfFile: corpus(in: d), encoding: .utf8)
        let out = d.appendingPathComponent("stdin.safetensors").path
        let t = try gen(["train", "-", "--out", out, "--steps", "3", "--quiet"] + tinyShape, stdin: text)
        #expect(t.status == 0, "\(t.stderr)")
        #expect(try SafeTensorsFile(path: out).metadata["corpus"] == "<stdin>")
        let e = try gen(["eval", "--from", out, "-", "--json"], stdin: text)
        #expect(e.status == 0 && e.stdout.contains("\"bits_per_byte\""))
    }
}

@Suite struct EvalTests {
    /// A model with all-zero weights predicts uniformly: the loss is ln V for every text.
    @Test func uniformModelGivesLogV() throws {
        let d = tempDir()
        let tok = try CharTokenizer(vocabulary: ["\n", "a", "b", "é"])
        let model = GPTModel(config: GPTConfig(nLayer: 1, nHead: 1, nEmbd: 4, blockSize: 3, vocabSize: 4))
        let path = d.appendingPathComponent("zero.safetensors").path
        try Checkpoint(model: model, tokenizer: tok).save(path)
        let text = d.appendingPathComponent("t.txt").path
        try "abé\nab".write(toFile: text, atomically: true, encoding: .utf8)   // 6 tokens, 7 bytes
        let r = try gen(["eval", "--from", path, text, "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(abs(o["loss"] as! Double - log(4.0)) < 1e-6)
        #expect(abs(o["perplexity"] as! Double - 4) < 1e-5)
        #expect(o["tokens"] as? Int == 6 && o["bytes"] as? Int == 7)
        #expect(abs(o["bits_per_byte"] as! Double - 5 * 2.0 / 7) < 1e-6)
    }

    /// eval's loss equals the definition: consecutive windows of the context, N-1 predictions.
    @Test func matchesDefinition() throws {
        let d = tempDir()
        let m = try tinyModel(in: d, steps: 20)
        let text = d.appendingPathComponent("t.txt").path
        let body = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void; and darkness was upon the face of the deep.\n"
        try body.write(toFile: text, atomically: true, encoding: .utf8)
        let r = try gen(["eval", "--from", m, text, "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let ck = try Checkpoint.load(m)
        let x = try ck.tokenizer.encode(body)
        let T = ck.model.config.blockSize, N = x.count
        var total = 0.0
        var k = 0
        while k * T < N - 1 {
            let end = min(k * T + T, N - 1)
            let inp = Array(x[(k * T)..<end]), tgt = Array(x[(k * T + 1)...end])
            total += Double(ck.model.loss(inp, targets: tgt)) * Double(inp.count)
            k += 1
        }
        #expect(abs(o["loss"] as! Double - total / Double(N - 1)) < 1e-5)
        #expect(o["tokens"] as? Int == N)
    }
}

@Suite struct EngineProcessTests {
    /// glibc's allocation trace (mtrace, with libc_malloc_debug preloaded) records no malloc,
    /// calloc or realloc at all, on any thread, in 100 training steps (with dropout), with one
    /// thread and with several.
    @Test(arguments: ["1", "2", "3"])
    func trainingStepsMakeNoAllocation(threads: String) throws {
        let debugMalloc = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
        try #require(FileManager.default.fileExists(atPath: debugMalloc))
        let d = tempDir()
        let trace = d.appendingPathComponent("trace").path
        let r = try gen(["bench", "--layers", "2", "--embd", "64", "--context", "32", "--batch", "4", "--steps", "100",
                         "--warmup", "3", "--dropout", "0.1", "--threads", threads, "--json"],
                        env: ["LD_PRELOAD": debugMalloc, "MALLOC_TRACE": trace])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        #expect(lines.first == "= Start" && lines.last == "= End")
        let allocations = lines.filter { $0.contains(" + ") }
        #expect(allocations.isEmpty, "\(allocations.prefix(5))")
    }

    /// Over 100 steps after warm-up the resident size does not grow.
    @Test func trainingStepsDoNotGrowMemory() throws {
        let r = try gen(["bench", "--layers", "2", "--embd", "64", "--context", "32", "--batch", "4", "--steps", "100",
                         "--warmup", "30", "--dropout", "0.1", "--threads", "2", "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((o["rss_growth"] as! Int) < 1 << 20, "\(r.stdout)")
    }

    /// gen replaces a slow OpenBLAS kernel by the best one this CPU runs, or runs the one
    /// GEN_BLAS_CORETYPE forces.
    @Test func openBLASKernelIsChosen() throws {
        let best = BLAS.recommendedCore(flags: BLAS.cpuFlags())
        let r = try gen(["bench", "--steps", "1", "--warmup", "0", "--json"], env: ["OPENBLAS_CORETYPE": "Prescott"])
        let core = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["blas_core"] as! String
        if let best, best != "SandyBridge" {
            #expect(BLAS.decide(loaded: core, flags: BLAS.cpuFlags()) == .keep, "loaded \(core)")
            #expect(core.lowercased() != "prescott")
        }
        let forced = try gen(["bench", "--steps", "1", "--warmup", "0", "--json"], env: ["GEN_BLAS_CORETYPE": "Prescott"])
        #expect(forced.stdout.contains("\"blas_core\":\"Prescott\""))
    }

    /// OpenBLAS is loaded only by commands that multiply matrices: without it, training a
    /// tokenizer and tokenizing still run, and a command that needs it stops with one line that
    /// names the library, before it reads or writes anything. Sampling loads it only for a
    /// prompt that needs it: one token decoded within the context needs none.
    @Test func missingOpenBLASIsOneClearError() throws {
        let d = tempDir()
        let c = corpus(in: d, bytes: 20_000)
        let env = ["GEN_BLAS_LIBRARY": d.appendingPathComponent("libopenblas-missing.so").path]
        let r = try gen(["train", c, "--steps", "1", "--out", d.appendingPathComponent("m.safetensors").path], env: env)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("Error: cannot load OpenBLAS (") && r.stderr.contains("libopenblas-missing.so"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d.appendingPathComponent("m.safetensors").path))
        let tok = d.appendingPathComponent("tok.json").path
        #expect(try gen(["tokenizer", "train", c, "--vocab-size", "300", "--out", tok], env: env).status == 0)
        let ids = try gen(["tokenize", "--from", tok, "--count"], stdin: "In the beginning\n", env: env)
        #expect(ids.status == 0 && Int(ids.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) != nil, "\(ids.stderr)")
        // With the library named, the same command runs.
        let named = try gen(["bench", "--steps", "1", "--warmup", "0", "--json"], env: ["GEN_BLAS_LIBRARY": "libopenblas.so.0"])
        #expect(named.status == 0, "\(named.stderr)")
        // Sampling: a one-token prompt (the empty one, or one character) runs without it, and gives
        // the completion it gives with it; a longer prompt, or a sample longer than the context
        // (context 32: of 33 new tokens the 32nd is fed at position 32, and the window is filled
        // again), stops with the one line before printing anything.
        let m = try tinyModel(in: d, steps: 2)
        for prompt in ["", "a"] {
            let args = ["sample", "--from", m, "--prompt", prompt, "--max-tokens", "32", "--seed", "3", "--ignore-eos"]
            let without = try gen(args, env: env), with = try gen(args)
            #expect(without.status == 0 && without.stderr.isEmpty, "\(without.stderr)")
            #expect(without.stdout == with.stdout && with.stdout.count > prompt.count + 1, "\(with.stdout)")
        }
        for args in [["--prompt", "ab", "--max-tokens", "3"], ["--prompt", "", "--max-tokens", "33"]] {
            let r = try gen(["sample", "--from", m, "--seed", "3", "--ignore-eos"] + args, env: env)
            #expect(r.status == 1 && r.stdout.isEmpty, "\(r.stdout)")
            #expect(r.stderr.hasPrefix("Error: cannot load OpenBLAS (") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        }
    }
}

@Suite struct LargeCorpusTests {
    /// A 300 MB corpus trains without holding it in memory: tokens are streamed into a
    /// memory-mapped UInt16 file, so the peak resident size stays far below the corpus size.
    @Test func largeCorpusTrainsInBoundedMemory() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(at: d) }
        let piece = try String(contentsOf: repoRoot.appendingPathComponent("data/kjv.txt"), encoding: .utf8)
        let path = d.appendingPathComponent("big.txt").path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let h = FileHandle(forWritingAtPath: path)!
        let data = Data(piece.utf8)
        var written = 0
        while written < 300_000_000 { h.write(data); written += data.count }
        try h.close()
        let out = d.appendingPathComponent("m.safetensors").path
        let (status, peakMB) = try peakResidentMB("\"$GEN\" train \(path) --out \(out) --steps 3 --eval-batches 2 --quiet \(tinyShape.joined(separator: " "))")
        #expect(status == 0)
        #expect(peakMB > 0 && peakMB < 150, "peak resident size \(peakMB) MB for a \(written / 1_000_000) MB corpus")
    }
}

@Suite struct BPECommandLineTests {
    @Test func tokenizerTrainTokenizeDetokenize() throws {
        let d = tempDir()
        let c = corpus(in: d, bytes: 200_000)
        let tok = d.appendingPathComponent("tok.json").path
        var r = try gen(["tokenizer", "train", c, "--vocab-size", "600", "--special", "<|endoftext|>", "--out", tok])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("600 tokens"))
        let loaded = try BPETokenizer.huggingFace(path: tok)
        #expect(loaded.vocabSize == 600)
        // Refuses to overwrite.
        r = try gen(["tokenizer", "train", c, "--vocab-size", "600", "--out", tok])
        #expect(r.status == 1 && r.stderr.contains("already exists"))
        // A pipeline: text -> ids -> text.
        let text = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n"
        let ids = try gen(["tokenize", "--from", tok], stdin: text)
        #expect(ids.status == 0 && ids.stdout.split(separator: "\n").count == 2)
        #expect(ids.stdout.split(separator: "\n")[0].split(separator: " ").allSatisfy { Int($0) != nil })
        let back = try gen(["detokenize", "--from", tok], stdin: ids.stdout)
        #expect(back.stdout == text)
        // A NUL byte is a token like any other and is written out (not the end of the text).
        let nul = "a\u{0}b\n"
        let nulIds = try gen(["tokenize", "--from", tok], stdin: nul)
        #expect(try gen(["detokenize", "--from", tok], stdin: nulIds.stdout).stdout == nul, "\(nulIds.stdout)")
        let count = try gen(["tokenize", "--from", tok, "--count"], stdin: text)
        #expect(Int(count.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == (try loaded.encode(text)).count)
        let special = try gen(["tokenize", "--from", tok, "--allow-special"], stdin: "a<|endoftext|>b\n")
        #expect(special.stdout.split(separator: " ").contains("599"))
        let bad = try gen(["detokenize", "--from", tok], stdin: "1 2 x\n")
        #expect(bad.status == 1 && bad.stderr.contains("'x' is not a token id"))
        // What the input holds is quoted safely: at most 24 characters, control characters
        // (a terminal's escape sequences) as \u{…}; tabs separate ids as spaces do.
        let odd = try gen(["detokenize", "--from", tok], stdinData: Data("97\t98\n1 \u{1B}[2J\u{1B}]0;title\u{07}andmoreafterthat\n".utf8))
        #expect(odd.status == 1 && odd.stdout == "ab\n"
                && odd.stderr == "Error: standard input line 2: '\\u{1B}[2J\\u{1B}]0;title\\u{7}andmoreaft…' is not a token id (0..<600)\n",
                "\(odd.stdout) \(odd.stderr)")
        #expect(try gen(["tokenizer", "train", c, "--pattern", "gpt5"]).status == 64)
        // Standard input ("-") learns the same tokenizer as the file; the corpus is never --out.
        let piped = d.appendingPathComponent("piped.json").path
        r = try gen(["tokenizer", "train", "-", "--vocab-size", "600", "--special", "<|endoftext|>", "--out", piped, "--quiet"],
                    stdinData: try Data(contentsOf: URL(fileURLWithPath: c)))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: piped)) == Data(contentsOf: URL(fileURLWithPath: tok)))
        r = try gen(["tokenizer", "train", "-", "--out", d.appendingPathComponent("bad.json").path], stdinData: Data([0x61, 0xFF]))
        #expect(r.status == 1 && r.stderr == "Error: standard input is not valid UTF-8: byte 0xFF at offset 1 (invalid start byte)\n", "\(r.stderr)")
        let before = try Data(contentsOf: URL(fileURLWithPath: c))
        r = try gen(["tokenizer", "train", c, "--out", c, "--force"])
        #expect(r.status == 1 && r.stderr.contains("is also an input"), "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: c)) == before)
        r = try gen(["tokenizer", "train", c, "--out", d.path])
        #expect(r.status == 1 && r.stderr.contains("is a folder"), "\(r.stderr)")
    }

    /// `tokenize --count` reads standard input in parts cut at a line end after a letter (both
    /// split patterns start a chunk there), holding only the part being read: the count is the
    /// whole text's, and a 100 MB stream is counted in a small fraction of its size.
    @Test func countStreamsStandardInput() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(at: d) }
        // Lines ending in every way the patterns treat differently (a letter, a space, a digit,
        // punctuation, blank lines, "\r\n", letters beyond ASCII), some past a megabyte, so
        // that parts end inside what one read brings and lines span reads.
        let endings = ["And God saw\n", "the light, that it was good \n", "\n\n", "verse 31\n", "Amen.\r\n",
                       "été déjà vu\n", "天地\n", "<|endoftext|>so\n", "  indented\n"]
        var text = ""
        var i = 0
        while text.utf8.count < 3_000_000 {
            text += endings[i % endings.count]
            if i % 1000 == 999 { text += String(repeating: "long line without an end ", count: 60_000) }
            i += 1
        }
        // A tokenizer that learned these lines' ends ("\n\n" and " \n\n" merged). Where a part
        // may end is proved by BPETrainerTests.lastSafeCutKeepsTheIds; this test proves the
        // reading: the parts together, the offsets, the memory.
        let tok = d.appendingPathComponent("tok.json").path
        let lines = d.appendingPathComponent("lines.txt")
        try Data(String(repeating: endings.joined(), count: 2000).utf8).write(to: lines)
        var r = try gen(["tokenizer", "train", corpus(in: d, bytes: 200_000), lines.path, "--vocab-size", "600", "--special", "<|endoftext|>", "--out", tok])
        #expect(r.status == 0, "\(r.stderr)")
        let loaded = try BPETokenizer.huggingFace(path: tok)
        for special in [false, true] {
            r = try gen(["tokenize", "--from", tok, "--count"] + (special ? ["--allow-special"] : []), stdin: text)
            #expect(r.status == 0 && Int(r.stdout.trimmingCharacters(in: .newlines)) == loaded.encode(text, allowSpecial: special).count,
                    "special \(special): \(r.stdout) \(r.stderr)")
        }
        // A bad byte past the first parts is named at its offset in the stream.
        r = try gen(["tokenize", "--from", tok, "--count"], stdinData: Data(text.utf8) + Data([0x61, 0xFF]))
        #expect(r.status == 1 && r.stderr == "Error: standard input is not valid UTF-8: byte 0xFF at offset \(text.utf8.count + 1) (invalid start byte)\n", "\(r.stderr)")
        // 100 copies of a megabyte: the count follows from one copy's and two's (each join
        // tokenizes alike), the child's high-water mark (VmHWM) stays far below the stream's size.
        let piece = corpus(in: d, bytes: 1_000_000, name: "piece.txt")
        let one = try String(contentsOfFile: piece, encoding: .utf8)
        let c1 = loaded.encode(one, allowSpecial: false).count, c2 = loaded.encode(one + one, allowSpecial: false).count
        let (status, peakMB) = try peakResidentMB("for i in $(seq 100); do cat \(piece); done | \"$GEN\" tokenize --from \(tok) --count > \(d.path)/count")
        #expect(status == 0)
        let counted = try String(contentsOfFile: d.path + "/count", encoding: .utf8)
        #expect(Int(counted.trimmingCharacters(in: .newlines)) == c1 + 99 * (c2 - c1), "\(counted)")
        #expect(peakMB > 0 && peakMB < 60, "peak resident size \(peakMB) MB for 100 MB of standard input")
    }

    @Test func trainSampleEvalWithBPE() throws {
        let d = tempDir()
        let c = corpus(in: d, bytes: 200_000)
        let m = d.appendingPathComponent("bpe.safetensors").path
        var r = try gen(["train", c, "--tokenizer", "bpe", "--vocab-size", "400", "--out", m, "--steps", "20", "--quiet"] + tinyShape)
        #expect(r.status == 0, "\(r.stderr)")
        let f = try SafeTensorsFile(path: m)
        #expect(f.entries["wte.weight"]?.shape == [400, 32])
        #expect(f.metadata["tokenizer"]!.hasPrefix("{\"type\":\"bpe\",\"pattern\":\"gpt2\""))
        r = try gen(["sample", "--from", m, "--prompt", "And God", "--max-tokens", "20", "--seed", "3"])
        #expect(r.status == 0 && r.stdout.hasPrefix("And God"))
        let e = try gen(["eval", "--from", m, c, "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
        #expect((o["bits_per_byte"] as! Double) > 0 && (o["tokens"] as! Int) < (o["bytes"] as! Int))
        // A tokenizer file can be reused.
        let tok = d.appendingPathComponent("tok.json").path
        #expect(try gen(["tokenizer", "train", c, "--vocab-size", "300", "--pattern", "gpt4", "--out", tok, "--quiet"]).status == 0)
        let m2 = d.appendingPathComponent("bpe2.safetensors").path
        r = try gen(["train", c, "--tokenizer", tok, "--out", m2, "--steps", "2", "--quiet"] + tinyShape)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try gen(["info", m2]).stdout.contains("bpe, 300 tokens"))
    }
}
