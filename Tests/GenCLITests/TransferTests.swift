import Foundation
import Testing
import GenKit
import TestScratch

/// Hugging Face models through the binary: export and read back, every command on a folder,
/// and a GPT-2 124M-shaped model (random weights, written here) loaded, sampled and finetuned.
@Suite struct TransferTests {
    static let fixtures = repoRoot.appendingPathComponent("Tests/GenKitTests/Fixtures/hf").path

    @Test func exportReadsBackEqual() throws {
        let d = tempDir()
        for tokenizer in ["bpe", "char"] {
            let m = try tinyModel(in: d, steps: 3, extra: ["--tokenizer", tokenizer, "--vocab-size", "300", "--force"])
            let dir = d.appendingPathComponent("hf-\(tokenizer)").path
            let r = try gen(["export", "--from", m, "--hf", dir])
            #expect(r.status == 0, "\(r.stderr)")
            let a = try Checkpoint.load(m), b = try Checkpoint.load(dir)
            #expect(a.model.parameters.array == b.model.parameters.array && a.model.config == b.model.config)
            #expect(try a.tokenizer.encode("And God said") == b.tokenizer.encode("And God said"))
            let files = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(files.contains("config.json") && files.contains("tokenizer.json") == (tokenizer == "bpe"))
            // Never into a folder with something in it, unless asked.
            let again = try gen(["export", "--from", m, "--hf", dir])
            #expect(again.status == 1 && again.stderr.contains("is not empty"))
        }
    }

    /// Every command that reads a model reads a Hugging Face folder.
    @Test func everyCommandReadsAFolder() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let hf = Self.fixtures + "/lmhead"
        #expect(try gen(["info", hf]).stdout.contains("Hugging Face GPT-2 model"))
        #expect(try gen(["info", hf + "/model.safetensors", "--json"]).stdout.contains("\"source\":\"huggingface\""))
        let s = try gen(["sample", "-m", hf, "-p", "And God", "-n", "8", "-s", "1"])
        #expect(s.status == 0 && s.stdout.hasPrefix("And God"), "\(s.stderr)")
        #expect(try gen(["sample", "-m", Self.fixtures + "/half", "-n", "5", "-s", "1"]).status == 0)
        let e = try gen(["eval", "-m", hf, c, "--json"])
        #expect(e.status == 0 && e.stdout.contains("bits_per_byte"), "\(e.stderr)")
        let t = try gen(["tokenize", "-m", hf, "--allow-special"], stdin: "In the beginning God created the heaven and the earth.\n")
        #expect(t.stdout.hasPrefix("41 78 261 296"), "\(t.stdout) \(t.stderr)")
        #expect(try gen(["detokenize", "-m", Self.fixtures + "/base"], stdin: t.stdout).stdout == "In the beginning God created the heaven and the earth.\n")
        let out = d.appendingPathComponent("ft.safetensors").path
        let f = try gen(["finetune", "--from", hf, c, "--out", out, "--steps", "3", "--batch", "2", "--quiet"])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(try Checkpoint.load(out).metadata["finetuned_from"] == "lmhead")
        // A folder given with a trailing slash: the default output goes beside it, not into it.
        let copy = d.appendingPathComponent("hf").path
        try FileManager.default.copyItem(atPath: hf, toPath: copy)
        #expect(try gen(["finetune", "--from", copy + "/", c, "--steps", "1", "--batch", "2", "--quiet"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: copy + "-finetuned.safetensors"))
    }

    /// <|endoftext|> separates files when training a BPE model; a sample ends there by default.
    @Test func endOfTextSeparatesAndEnds() throws {
        let d = tempDir()
        let a = corpus(in: d, bytes: 30_000, name: "a.txt"), b = corpus(in: d, bytes: 30_000, name: "b.txt")
        let m = d.appendingPathComponent("m.safetensors").path
        #expect(try gen(["train", a, b, "--tokenizer", "bpe", "--vocab-size", "300", "--out", m, "--steps", "2", "--quiet"] + tinyShape).status == 0)
        let ck = try Checkpoint.load(m)
        let eot = try #require(ck.tokenizer.endOfText)
        var skipped = 0
        let one = try TokenData(encoding: [a], with: ck.tokenizer, cacheDirectory: d.path, skipped: &skipped)
        let two = try TokenData(encoding: [a, b], with: ck.tokenizer, cacheDirectory: d.path, skipped: &skipped)
        #expect(two.count == 2 * one.count + 1 && two[one.count] == eot)
        // An empty prompt starts from <|endoftext|>; no sample prints it unless --ignore-eos.
        let s = try gen(["sample", "-m", m, "-n", "200", "-s", "2", "--count", "5", "--temp", "1.5"])
        #expect(s.status == 0 && !s.stdout.contains("<|endoftext|>"))
    }

    /// GPT-2 124M's shape (12 layers, 768 channels, context 1024, vocabulary 50257), random
    /// weights in a Hugging Face folder: loads, samples, and runs a finetuning step.
    @Test func gpt2SmallShape() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(at: d) }   // half a gigabyte
        let dir = d.appendingPathComponent("gpt2")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.fixtures + "/lmhead/tokenizer.json", toPath: dir.appendingPathComponent("tokenizer.json").path)
        let config = GPTConfig(nLayer: 12, nHead: 12, nEmbd: 768, blockSize: 1024, vocabSize: 50257)
        let model = GPTModel(config: config)
        model.initialize(seed: 1)
        let items = model.layout.tensors.map {
            SafeTensorsWriter.Item(name: "transformer." + $0.name, shape: $0.shape,
                                   bytes: UnsafeRawBufferPointer(start: model.parameters.pointer + $0.offset, count: $0.count * 4))
        }
        try SafeTensorsWriter.write(items, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors").path)
        try """
            {"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
             "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05, "tie_word_embeddings": true}
            """.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let info = try gen(["info", dir.path, "--json"])
        #expect(info.stdout.contains("\"parameters\":124439808"), "\(info.stdout) \(info.stderr)")
        let s = try gen(["sample", "-m", dir.path, "-p", "And God said", "-n", "4", "-s", "1"])
        #expect(s.status == 0 && s.stdout.hasPrefix("And God said"), "\(s.stderr)")
        let c = corpus(in: d, bytes: 40_000)
        let out = d.appendingPathComponent("ft.safetensors").path
        let f = try gen(["finetune", "--from", dir.path, c, "--out", out, "--steps", "1", "--batch", "1", "--quiet", "--val-fraction", "0"])
        #expect(f.status == 0, "\(f.stderr)")
        let ft = try Checkpoint.load(out)
        #expect(ft.model.config == config && ft.metadata["step"] == "1")
        #expect(ft.model.parameters.array != model.parameters.array)
    }
}

/// LoRA through the binary: a PEFT folder out, --adapter in sample and eval, merge, resume.
@Suite struct LoRACommandTests {
    @Test func finetuneSampleEvalMergeResume() throws {
        let d = tempDir()
        let c = corpus(in: d)
        let base = TransferTests.fixtures + "/lmhead"
        let a = d.appendingPathComponent("a").path, b = d.appendingPathComponent("b").path
        let common = ["--lora", "4", "--lora-dropout", "0.1", "--steps", "12", "--batch", "4", "--save-every", "6", "--quiet", "--seed", "2", "--threads", "2"]
        var r = try gen(["finetune", "--from", base, c, "--out", a] + common)
        #expect(r.status == 0, "\(r.stderr)")
        let files = try FileManager.default.contentsOfDirectory(atPath: a).sorted()
        #expect(files == ["adapter_config.json", "adapter_model.safetensors", "training_state.safetensors"])
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: a + "/adapter_config.json"))) as! [String: Any]
        #expect(config["peft_type"] as? String == "LORA" && config["r"] as? Int == 4 && config["fan_in_fan_out"] as? Bool == true)
        // gen info describes the adapter folder without its base model: 2 layers of (r·in + out·r) a target.
        let info = try gen(["info", a, "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as! [String: Any]
        let (C, rank) = (16, 4)
        #expect(o["source"] as? String == "lora" && o["rank"] as? Int == rank && o["layers"] as? Int == 2 && o["step"] as? Int == 12, "\(info.stdout)")
        #expect(o["parameters"] as? Int == 2 * rank * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C)), "\(info.stdout)")
        #expect(try gen(["info", a]).stdout.contains("rank        4, alpha 8 (scaling 2), dropout 0.1"))
        // Stopped at 6 and resumed: adapters bit-identical to the uninterrupted run.
        r = try gen(["finetune", "--from", base, c, "--out", b] + common, env: ["GEN_STOP_AFTER_STEP": "6"])
        #expect(r.status == 130, "\(r.stderr)")
        r = try gen(["finetune", "--from", base, c, "--out", b, "--resume"] + common)
        #expect(r.status == 0, "\(r.stderr)")
        let fa = try SafeTensorsFile(path: a + "/adapter_model.safetensors"), fb = try SafeTensorsFile(path: b + "/adapter_model.safetensors")
        for k in fa.entries.keys { #expect(fa.rawBytes(k) == fb.rawBytes(k), "\(k)") }
        // eval with the adapter equals eval of the merged model; the base itself differs.
        let withAdapter = try gen(["eval", "-m", base, "--adapter", a, c, "--json"]).stdout
        let m = d.appendingPathComponent("merged.safetensors").path
        #expect(try gen(["merge", "-m", base, "--adapter", a, "--out", m]).status == 0)
        let merged = try gen(["eval", "-m", m, c, "--json"]).stdout
        func loss(_ s: String) -> Double { (try! JSONSerialization.jsonObject(with: Data(s.utf8)) as! [String: Any])["loss"] as! Double }
        #expect(abs(loss(withAdapter) - loss(merged)) < 1e-5)
        #expect(abs(loss(try gen(["eval", "-m", base, c, "--json"]).stdout) - loss(merged)) > 1e-4)
        let s = try gen(["sample", "-m", base, "--adapter", a, "-p", "And", "-n", "5", "-s", "1"])
        #expect(s.status == 0 && s.stdout.hasPrefix("And"), "\(s.stderr)")
        // An adapter for another shape is refused with one line.
        let other = try tinyModel(in: d, steps: 2, extra: ["--tokenizer", "bpe", "--vocab-size", "300", "--force"])
        let bad = try gen(["eval", "-m", other, "--adapter", a, c])
        #expect(isCleanFailure(bad) && bad.stderr.contains("shape"), "\(bad.stderr)")
    }
}
