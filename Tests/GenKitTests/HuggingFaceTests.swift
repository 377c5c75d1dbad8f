import Foundation
import Testing
import GenKit
import GenKernels
import TestScratch

/// Hugging Face GPT-2 folders written by transformers (`scripts/hf_fixtures.py`): gen's logits
/// equal transformers' for every layout and variant, and its tokenizer gives their ids.
@Suite struct HuggingFaceTests {
    static let root = Bundle.module.resourcePath! + "/Fixtures/hf"

    @Test(arguments: ["lmhead", "base", "half", "gelu", "sharded"])
    func logitsEqualTransformers(name: String) throws {
        let folder = Self.root + "/" + name
        let ck = try Checkpoint.load(folder)
        #expect(ck.isHuggingFace)
        let expected = try SafeTensorsFile(path: folder + "/expected.safetensors")
        let ids = try expected.int32s("inputs")
        let logits = ck.model.logits(ids)
        #expect(relativeError(logits, try expected.floats("logits")) < 1e-5, "\(name)")
        if name == "gelu" {
            #expect(ck.model.config.activation == .gelu && ck.model.config.hidden == 40 && ck.model.config.layerNormEpsilon == 1e-6)
        }
        // The file alone, with its config.json beside it, reads the same.
        if name != "sharded" {
            let file = try Checkpoint.load(folder + "/model.safetensors")
            #expect(file.model.parameters.array == ck.model.parameters.array)
        }
    }

    @Test func tokenizerIDsEqualHuggingFace() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.root + "/tokenizer_ids.json"))
        let o = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let texts = o["texts"] as! [String], ids = o["ids"] as! [[Int]]
        let json = try HuggingFaceGPT2.tokenizer(in: Self.root + "/lmhead") as! BPETokenizer
        let files = try HuggingFaceGPT2.tokenizer(in: Self.root + "/base") as! BPETokenizer
        for (t, expected) in zip(texts, ids) {
            #expect(json.encode(t, allowSpecial: true).map(Int.init) == expected, "\(t)")
            #expect(files.encode(t, allowSpecial: true).map(Int.init) == expected, "\(t)")
        }
        #expect(json.endOfText == 0 && files.endOfText == 0)
    }

    /// Variants gen does not compute are refused naming the key; a pickle is refused with the
    /// conversion command.
    @Test func variantsAreRefused() throws {
        let dir = tempDir()
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.root + "/lmhead/config.json"))) as! [String: Any]
        for (key, value, message) in [("scale_attn_by_inverse_layer_idx", true as Any, "scale_attn_by_inverse_layer_idx"),
                                      ("reorder_and_upcast_attn", true, "reorder_and_upcast_attn"),
                                      ("model_type", "llama", "model_type"),
                                      ("tie_word_embeddings", false, "tie_word_embeddings"),
                                      ("activation_function", "relu", "activation_function")] {
            var c = config
            c[key] = value
            let path = dir.appendingPathComponent("config.json").path
            try JSONSerialization.data(withJSONObject: c).write(to: URL(fileURLWithPath: path))
            #expect(throws: GenError.self) { _ = try HuggingFaceGPT2.config(at: path) }
            do { _ = try HuggingFaceGPT2.config(at: path) } catch let e as GenError { #expect(e.message.contains(message), "\(e.message)") }
        }
        let pickle = dir.appendingPathComponent("p")
        try FileManager.default.createDirectory(at: pickle, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: config).write(to: pickle.appendingPathComponent("config.json"))
        try Data([0x80, 0x02]).write(to: pickle.appendingPathComponent("pytorch_model.bin"))
        do { _ = try Checkpoint.load(pickle.path); Issue.record("a pickle loaded") } catch let e as GenError {
            #expect(e.message.contains("safe_serialization=True") && !e.message.contains("\n"))
        }
    }

    /// A config.json, tokenizer.json or adapter_config.json that is not a JSON object is refused
    /// in one line naming the file and where the text stops being JSON, or what it holds.
    @Test func malformedJSONFilesAreNamed() throws {
        let dir = tempDir()
        let path = dir.appendingPathComponent("config.json").path
        func message(_ text: String, _ read: (String) throws -> Void) -> String {
            do {
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                try read(path)
                Issue.record("\(text) was read")
            } catch let e as GenError { return e.message } catch { Issue.record("\(error)") }
            return ""
        }
        let readers: [(String) throws -> Void] = [
            { _ = try HuggingFaceGPT2.config(at: $0) },
            { _ = try BPETokenizer.huggingFace(path: $0) },
        ]
        for read in readers {
            let cut = message("{\"n_layer\": 2,\n \"n_head\": }", read)
            #expect(cut == "\(path): invalid JSON at line 2, column 12: unexpected character", "\(cut)")
            let array = message("[1, 2]", read)
            #expect(array == "\(path): expected a JSON object, found an array", "\(array)")
        }
        let adapter = dir.appendingPathComponent("adapter_config.json").path
        try "{\"r\": 8,".write(toFile: adapter, atomically: true, encoding: .utf8)
        do {
            _ = try LoRAAdapters.load(folder: dir.path, model: Checkpoint.load(Self.root + "/lmhead").model.config)
            Issue.record("a cut adapter_config.json was read")
        } catch let e as GenError {
            #expect(e.message == "\(adapter): invalid JSON at column 9: expected a string key", "\(e.message)")
        }
    }

    /// gen's files written before version 2 (`format` = gen, `format_version` = 1) still load.
    @Test func readsVersionOneFiles() throws {
        let ck = try Checkpoint.load(Self.root + "/lmhead")
        let dir = tempDir()
        let path = dir.appendingPathComponent("m.safetensors").path
        try ck.save(path)
        let file = try SafeTensorsFile(path: path)
        var meta = file.metadata
        meta["format"] = "gen"; meta["format_version"] = "1"; meta["gen_format_version"] = nil
        let old = dir.appendingPathComponent("old.safetensors").path
        try Self.rewrite(file, ck.model.layout.tensors, metadata: meta, to: old)
        #expect(try Checkpoint.load(old).model.parameters.array == ck.model.parameters.array)
    }

    /// A load that does not read the weights (`gen info`, a model's tokenizer) gives the same
    /// config, tokenizer and metadata, leaves every weight zero, and still refuses a file with a
    /// tensor missing or of the wrong type.
    @Test func headerOnlyLoadChecksWithoutReading() throws {
        for folder in ["lmhead", "half", "sharded"].map({ Self.root + "/" + $0 }) {
            let full = try Checkpoint.load(folder), header = try Checkpoint.load(folder, .headerOnly)
            #expect(header.model.config == full.model.config && header.metadata == full.metadata)
            #expect(header.tokenizer.vocabSize == full.tokenizer.vocabSize)
            #expect(header.model.parameters.array.allSatisfy { $0 == 0 } && full.model.parameters.array.contains { $0 != 0 })
        }
        let ck = try Checkpoint.load(Self.root + "/lmhead")
        let dir = tempDir()
        let path = dir.appendingPathComponent("m.safetensors").path
        try ck.save(path)
        #expect(try Checkpoint.load(path, .headerOnly).metadata == Checkpoint.load(path).metadata)
        // The same file without its last tensor, then with it as I32.
        let file = try SafeTensorsFile(path: path)
        let tensors = ck.model.layout.tensors
        for damage in ["missing", "I32"] {
            let bad = dir.appendingPathComponent("\(damage).safetensors").path
            try Self.rewrite(file, tensors, metadata: file.metadata, to: bad) { items in
                if damage == "missing" { items.removeLast() } else { items[items.count - 1].dtype = "I32" }
            }
            #expect(throws: GenError.self) { _ = try Checkpoint.load(bad, .headerOnly) }
        }
    }

    /// A stored `lm_head.weight` equal to the embeddings loads (in fp32, and rounded to 8 bits,
    /// for sampling or not: the head is compared as stored, not with the rounded embeddings),
    /// and one that differs in a single value is refused, naming both tensors.
    @Test func storedHeadMustBeTheEmbeddings() throws {
        let base = Self.root + "/base", file = try SafeTensorsFile(path: base + "/model.safetensors")
        let tensors = try Checkpoint.load(base).model.layout.tensors
        for differs in [false, true] {
            let dir = tempDir().path
            for f in ["config.json", "vocab.json", "merges.txt"] { try FileManager.default.copyItem(atPath: base + "/" + f, toPath: dir + "/" + f) }
            var head = try file.floats("wte.weight")
            if differs { head[7] += 1e-3 }
            try head.withUnsafeBytes { raw in
                try Self.rewrite(file, tensors, metadata: ["format": "pt"], to: dir + "/model.safetensors") { items in
                    let wte = items.first { $0.name == "wte.weight" }!
                    items.append(SafeTensorsWriter.Item(name: "lm_head.weight", shape: wte.shape, bytes: raw))
                }
            }
            for options: LoadOptions in [[], .decoding, [.decoding, .int8], .int8] {
                if differs {
                    #expect(throws: GenError.self) { _ = try Checkpoint.load(dir, options) }
                    do { _ = try Checkpoint.load(dir, options) } catch let e as GenError {
                        #expect(e.description.contains("lm_head.weight differs from wte.weight"))
                    }
                } else {
                    #expect(try Checkpoint.load(dir, options).model.config.vocabSize > 0, "options \(options.rawValue)")
                }
            }
        }
    }

    /// Writes `tensors` of `file` (F32) to `path` with `metadata`, after `edit` of the items.
    static func rewrite(_ file: SafeTensorsFile, _ tensors: [ParameterLayout.Tensor], metadata: [String: String], to path: String,
                        edit: (inout [SafeTensorsWriter.Item]) -> Void = { _ in }) throws {
        let all = try tensors.flatMap { try file.floats($0.name) }
        try all.withUnsafeBytes { raw in
            var at = 0
            var items = tensors.map { t in
                defer { at += t.count * 4 }
                return SafeTensorsWriter.Item(name: t.name, shape: t.shape, bytes: UnsafeRawBufferPointer(rebasing: raw[at..<(at + t.count * 4)]))
            }
            edit(&items)
            try SafeTensorsWriter.write(items, metadata: metadata, to: path)
        }
    }
}
