import Foundation
import Testing
import GenKit
import GenKernels
import TestScratch

/// Mutated checkpoints, state files and tokenizer.json files, read in process: each one loads
/// or throws a `GenError`; a crash fails the whole suite.
@Suite struct FuzzTests {
    /// Mutations of `bytes`: byte flips (most in the header), truncations, header lengths, and
    /// numbers in the JSON replaced by values at the edges.
    static func mutants(of bytes: [UInt8], count: Int, seed: UInt64, headerEnd: Int) -> [[UInt8]] {
        var rng = Random(seed: seed)
        let edges = ["-1", "0", "2147483647", "2147483648", "4294967296", "9223372036854775807", "99999999999999999999",
                     "-9223372036854775808", "1e300", "3.5", "null", "[]", "\"x\""]
        var out: [[UInt8]] = []
        let text = String(decoding: bytes.prefix(headerEnd), as: UTF8.self)
        // Offsets of numbers in the header.
        var numbers: [Range<Int>] = []
        var i = 0
        let h = Array(bytes.prefix(headerEnd))
        while i < h.count {
            if (h[i] >= 0x30 && h[i] <= 0x39) || h[i] == 0x2D {
                let start = i
                i += 1
                while i < h.count && h[i] >= 0x30 && h[i] <= 0x39 { i += 1 }
                numbers.append(start..<i)
            } else { i += 1 }
        }
        _ = text
        for k in 0..<count {
            var m = bytes
            switch k % 4 {
            case 0:   // flip a few bytes, mostly in the header
                for _ in 0..<(1 + rng.nextInt(below: 3)) {
                    let at = rng.nextInt(below: 4) == 0 ? rng.nextInt(below: m.count) : rng.nextInt(below: max(1, min(m.count, headerEnd)))
                    m[at] ^= UInt8(1 << rng.nextInt(below: 8))
                }
            case 1:   // truncate
                m = Array(m.prefix(rng.nextInt(below: m.count)))
            case 2:   // replace a number in the header
                if !numbers.isEmpty {
                    let r = numbers[rng.nextInt(below: numbers.count)]
                    m.replaceSubrange(r, with: Array(edges[rng.nextInt(below: edges.count)].utf8))
                }
            default:  // change the header length or insert garbage
                if m.count >= 8 && headerEnd > 8 && rng.nextInt(below: 2) == 0 {
                    let v = [UInt64(0), UInt64(headerEnd), UInt64.max, UInt64(m.count), UInt64(rng.nextInt(below: 1 << 20))][rng.nextInt(below: 5)]
                    for b in 0..<8 { m[b] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(b))) }
                } else {
                    let at = rng.nextInt(below: m.count)
                    m.insert(contentsOf: Array("{\"a\":[1,2],".utf8), at: at)
                }
            }
            out.append(m)
        }
        return out
    }

    static func headerEnd(_ bytes: [UInt8]) -> Int {
        var n = 0
        for b in 0..<8 { n |= Int(bytes[b]) << (8 * b) }
        return 8 + n
    }

    /// Loads `mutants` with `load`: each must load or throw GenError.
    static func check(_ mutants: [[UInt8]], in dir: URL, _ load: (String) throws -> Void) throws -> (loaded: Int, refused: Int) {
        var loaded = 0, refused = 0
        let path = dir.appendingPathComponent("mutant").path
        for m in mutants {
            try Data(m).write(to: URL(fileURLWithPath: path))
            do { try load(path); loaded += 1 } catch is GenError { refused += 1 }
        }
        return (loaded, refused)
    }

    @Test func mutatedCheckpointsStateAndTokenizers() throws {
        let dir = tempDir()
        // A small model with a BPE tokenizer, its state, and a tokenizer.json.
        let corpus = dir.appendingPathComponent("c.txt").path
        try String(repeating: "In the beginning God created the heaven and the earth; and the Spirit of God moved upon the face of the waters. 0123456789 ", count: 40).write(toFile: corpus, atomically: true, encoding: .utf8)
        let tok = try BPETrainer.train(paths: [corpus], vocabSize: 300, pattern: .gpt2, special: ["<|endoftext|>"])
        let config = GPTConfig(nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 8, vocabSize: tok.vocabSize)
        let model = GPTModel(config: config)
        model.initialize(seed: 1)
        var settings = TrainingSettings()
        settings.batchSize = 2
        var skipped = 0
        let data = try TokenData(encoding: [corpus], with: tok, cacheDirectory: dir.path, skipped: &skipped)
        let path = dir.appendingPathComponent("m.safetensors").path
        let run = TrainingRun(model: model, settings: settings, data: data, trainTokens: data.count, options: .init(),
                              checkpoint: CheckpointPolicy(path: path, every: 0, tokenizer: tok))
        try run.save()
        let modelBytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let stateBytes = Array(try Data(contentsOf: URL(fileURLWithPath: path + ".state")))
        try tok.writeHuggingFaceJSON(to: dir.appendingPathComponent("t.json").path)
        let tokBytes = Array(try Data(contentsOf: dir.appendingPathComponent("t.json")))

        let a = try Self.check(Self.mutants(of: modelBytes, count: 400, seed: 1, headerEnd: Self.headerEnd(modelBytes)), in: dir) {
            _ = try Checkpoint.load($0)
        }
        let trainer = Trainer(model: model, settings: settings)
        let b = try Self.check(Self.mutants(of: stateBytes, count: 300, seed: 2, headerEnd: Self.headerEnd(stateBytes)), in: dir) {
            _ = try TrainingState.load($0, into: trainer)
        }
        let c = try Self.check(Self.mutants(of: tokBytes, count: 300, seed: 3, headerEnd: tokBytes.count), in: dir) {
            _ = try BPETokenizer.huggingFace(path: $0)
        }
        // Most mutants are refused, some still load (a flipped weight is still a weight).
        #expect(a.refused > 200 && b.refused > 100 && c.refused > 100, "\(a) \(b) \(c)")
    }

    /// Mutated files of Hugging Face GPT-2 folders (config.json, model.safetensors in fp32 and
    /// fp16, a shard index, vocab.json and merges.txt) and of a PEFT adapter folder, each in a
    /// copy of its fixture folder, loaded whole.
    @Test func mutatedFolderFiles() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let fm = FileManager.default
        let dir = tempDir()
        func copy(_ fixture: String) throws -> URL {
            let to = dir.appendingPathComponent(fixture.replacing("/", with: "-"))
            try fm.copyItem(at: fixtures.appendingPathComponent(fixture), to: to)
            return to
        }
        let model = try copy("hf/lmhead"), half = try copy("hf/half"), base = try copy("hf/base")
        let sharded = try copy("hf/sharded"), adapter = try copy("lora/adapter")
        let shape = try Checkpoint.load(model.path).model.config
        func check(_ file: URL, count: Int, seed: UInt64, binary: Bool, _ load: () throws -> Void) throws -> (loaded: Int, refused: Int) {
            let bytes = Array(try Data(contentsOf: file))
            var loaded = 0, refused = 0
            for m in Self.mutants(of: bytes, count: count, seed: seed, headerEnd: binary ? Self.headerEnd(bytes) : bytes.count) {
                try Data(m).write(to: file)
                do { try load(); loaded += 1 } catch is GenError { refused += 1 }
            }
            try Data(bytes).write(to: file)
            return (loaded, refused)
        }
        let results = [
            try check(model.appendingPathComponent("config.json"), count: 200, seed: 4, binary: false) { _ = try Checkpoint.load(model.path) },
            try check(adapter.appendingPathComponent("adapter_config.json"), count: 200, seed: 5, binary: false) {
                _ = try LoRAAdapters.load(folder: adapter.path, model: shape)
            },
            try check(model.appendingPathComponent("model.safetensors"), count: 100, seed: 6, binary: true) { _ = try Checkpoint.load(model.path) },
            try check(half.appendingPathComponent("model.safetensors"), count: 100, seed: 7, binary: true) { _ = try Checkpoint.load(half.path) },
            try check(sharded.appendingPathComponent("model.safetensors.index.json"), count: 100, seed: 8, binary: false) {
                _ = try Checkpoint.load(sharded.path)
            },
            try check(base.appendingPathComponent("vocab.json"), count: 100, seed: 9, binary: false) { _ = try Checkpoint.load(base.path) },
            try check(base.appendingPathComponent("merges.txt"), count: 100, seed: 10, binary: false) { _ = try Checkpoint.load(base.path) },
            try check(adapter.appendingPathComponent("adapter_model.safetensors"), count: 100, seed: 11, binary: true) {
                _ = try LoRAAdapters.load(folder: adapter.path, model: shape)
            },
        ]
        for (i, r) in results.enumerated() { #expect(r.refused > 10, "file \(i): \(r)") }
        #expect(results[0].loaded > 0 && results[1].loaded > 0, "\(results)")
        // Values at the edges, each refused in one line before anything is allocated for them
        // (a rank of Int.max overflowed the adapters' size).
        let configFile = adapter.appendingPathComponent("adapter_config.json")
        let original = try String(contentsOf: configFile, encoding: .utf8)
        for (key, value, message) in [("r", "9223372036854775807", "gen builds ranks 1 to 4096"), ("r", "0", "gen builds ranks 1 to 4096"),
                                      ("r", "4097", "gen builds ranks 1 to 4096"), ("lora_alpha", "1e300", "not a finite number"),
                                      ("lora_dropout", "1.5", "lora_dropout must be in [0, 1)")] {
            let line = original.split(separator: "\n").first { $0.contains("\"\(key)\":") }!
            try original.replacing(line, with: "  \"\(key)\": \(value),").write(to: configFile, atomically: true, encoding: .utf8)
            do {
                _ = try LoRAAdapters.load(folder: adapter.path, model: shape)
                Issue.record("\(key) \(value) was loaded")
            } catch let e as GenError {
                #expect(e.message.contains(message) && !e.message.contains("\n"), "\(e.message)")
            }
        }
    }
}
