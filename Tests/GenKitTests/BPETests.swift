import Foundation
import Testing
import GenKit
import GenKernels
import TestScratch

/// Byte-level BPE against Hugging Face `tokenizers` (fixtures from scripts/bpe_reference.py):
/// the same ids, token for token, on prose, code, numbers, whitespace runs, contractions,
/// accents, Greek, Cyrillic, CJK, Arabic, emoji sequences, combining marks and more.
@Suite struct BPETests {
    static func fixture(_ pattern: String) throws -> (BPETokenizer, [String], [[Int32]]) {
        let dir = Bundle.module.path(forResource: "Fixtures", ofType: nil)!
        let tok = try BPETokenizer.huggingFace(path: dir + "/bpe_\(pattern).tokenizer.json")
        let data = FileManager.default.contents(atPath: dir + "/bpe_\(pattern).expected.json")!
        let obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let ids = (obj["ids"] as! [[Int]]).map { $0.map(Int32.init) }
        return (tok, obj["texts"] as! [String], ids)
    }

    @Test(arguments: ["gpt2", "gpt4"])
    func sameIDsAsHuggingFace(pattern: String) throws {
        let (tok, texts, expected) = try Self.fixture(pattern)
        #expect(tok.pattern.rawValue == pattern)
        #expect(tok.vocabSize == 1000)
        for (text, ids) in zip(texts, expected) {
            let got = try tok.encode(text)
            #expect(got == ids, "\(pattern): \(text.debugDescription)")
            #expect(tok.decode(got) == text)
        }
        // Encoding twice (the second time from the chunk cache) gives the same ids.
        for (text, ids) in zip(texts, expected) { #expect(try tok.encode(text) == ids) }
    }

    @Test(arguments: SplitPattern.allCases)
    func roundTripsRandomUTF8(pattern: SplitPattern) throws {
        let (tok, _, _) = try Self.fixture(pattern.rawValue)
        var rng = Random(seed: 21)
        let ranges: [ClosedRange<UInt32>] = [0x20...0x7E, 0x09...0x0D, 0xA0...0x24F, 0x370...0x3FF, 0x400...0x4FF,
                                             0x600...0x6FF, 0x300...0x36F, 0x4E00...0x9FFF, 0x1F300...0x1FAFF, 0x2000...0x206F]
        for _ in 0..<300 {
            var s = String.UnicodeScalarView()
            for _ in 0..<rng.nextInt(below: 40) {
                let r = ranges[rng.nextInt(below: ranges.count)]
                let v = r.lowerBound + UInt32(rng.nextInt(below: Int(r.upperBound - r.lowerBound) + 1))
                if let u = Unicode.Scalar(v) { s.append(u) }
            }
            let text = String(s)
            #expect(tok.decode(try tok.encode(text)) == text)
        }
    }

    @Test func specialTokensOnlyWhereAllowed() throws {
        let (tok, _, _) = try Self.fixture("gpt2")
        let eot = tok.special["<|endoftext|>"]!
        let text = "the end<|endoftext|>the start"
        #expect(!(try tok.encode(text)).contains(eot))
        let allowed = tok.encode(text, allowSpecial: true)
        #expect(allowed.filter { $0 == eot }.count == 1)
        #expect(tok.decode(allowed) == text)
    }

    @Test func checkpointFormRoundTrips() throws {
        let (tok, texts, expected) = try Self.fixture("gpt4")
        let again = try makeTokenizer(json: tok.json)
        for (t, ids) in zip(texts, expected) { #expect(try again.encode(t) == ids) }
        // And through the exported tokenizer.json.
        let path = tempDir().appendingPathComponent("tokenizer.json").path
        try tok.huggingFaceJSON.write(toFile: path, atomically: true, encoding: .utf8)
        let reread = try BPETokenizer.huggingFace(path: path)
        for (t, ids) in zip(texts, expected) { #expect(try reread.encode(t) == ids) }
    }

    /// The scanner's chunks equal the `tokenizers` pre-tokenizer's, chunk for chunk.
    @Test(arguments: SplitPattern.allCases)
    func sameChunksAsHuggingFace(pattern: SplitPattern) throws {
        let dir = Bundle.module.path(forResource: "Fixtures", ofType: nil)!
        let data = FileManager.default.contents(atPath: dir + "/bpe_\(pattern.rawValue).expected.json")!
        let obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        for (text, chunks) in zip(obj["texts"] as! [String], obj["chunks"] as! [[String]]) {
            #expect(pattern.chunks(text) == chunks, "\(text.debugDescription)")
        }
    }

    /// GPT-2's own files (vocab.json + merges.txt), written here from the fixture, give the same ids.
    @Test func readsGPT2VocabAndMerges() throws {
        let dir = Bundle.module.path(forResource: "Fixtures", ofType: nil)!
        let data = FileManager.default.contents(atPath: dir + "/bpe_gpt2.tokenizer.json")!
        let obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let model = obj["model"] as! [String: Any]
        let tmp = tempDir()
        let vocab = try JSONSerialization.data(withJSONObject: model["vocab"]!)
        _ = FileManager.default.createFile(atPath: tmp.path + "/vocab.json", contents: vocab)
        let merges = (model["merges"] as! [[String]]).map { $0.joined(separator: " ") }
        try ("#version: 0.2\n" + merges.joined(separator: "\n") + "\n").write(toFile: tmp.path + "/merges.txt", atomically: true, encoding: .utf8)
        let tok = try BPETokenizer.gpt2Files(vocab: tmp.path + "/vocab.json", merges: tmp.path + "/merges.txt")
        let (_, texts, expected) = try Self.fixture("gpt2")
        for (t, ids) in zip(texts, expected) { #expect(try tok.encode(t) == ids) }
        #expect(tok.special["<|endoftext|>"] == 0)
        // merges.txt that is not UTF-8 is refused with the byte and its offset.
        _ = FileManager.default.createFile(atPath: tmp.path + "/merges.txt", contents: Data("#version: 0.2\nĠ t\n".utf8) + Data([0x68, 0x20, 0xE9, 0x0A]))
        #expect(throws: GenError("\(tmp.path)/merges.txt is not valid UTF-8: byte 0xE9 at offset 21 (invalid continuation byte)")) {
            try BPETokenizer.gpt2Files(vocab: tmp.path + "/vocab.json", merges: tmp.path + "/merges.txt")
        }
    }

    @Test func splitExamples() {
        #expect(SplitPattern.gpt2.chunks("Hello world's  end\n\n x") == ["Hello", " world", "'s", " ", " end", "\n\n", " x"])
        #expect(SplitPattern.gpt4.chunks("Hello WORLD'S 12345\r\n\n  x") == ["Hello", " WORLD", "'S", " ", "123", "45", "\r\n\n", " ", " x"])
    }
}

@Suite struct BPETrainerTests {
    static let corpus: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("data/kjv.txt")
        return url.path
    }()

    @Test(arguments: SplitPattern.allCases)
    func trainsExactlyTheVocabularyAsked(pattern: SplitPattern) throws {
        let tok = try BPETrainer.train(paths: [Self.corpus], vocabSize: 700, pattern: pattern, special: ["<|endoftext|>"])
        #expect(tok.vocabSize == 700)
        #expect(tok.merges.count == 700 - 256 - 1)
        #expect(tok.special["<|endoftext|>"] == 699)
        // Deterministic.
        let again = try BPETrainer.train(paths: [Self.corpus], vocabSize: 700, pattern: pattern, special: ["<|endoftext|>"])
        #expect(again.merges.map { [$0.left, $0.right] } == tok.merges.map { [$0.left, $0.right] })
        // It compresses, and round-trips.
        let text = try String(contentsOfFile: Self.corpus, encoding: .utf8)
        let ids = try tok.encode(text)
        #expect(Double(text.utf8.count) / Double(ids.count) > 2.5)
        #expect(tok.decode(ids) == text)
        // The first merge is the most frequent pair of the corpus.
        var counts: [[UInt8]: Int] = [:]
        for chunk in pattern.chunks(text) {
            let b = Array(chunk.utf8)
            for i in 0..<max(0, b.count - 1) { counts[[b[i], b[i + 1]], default: 0] += 1 }
        }
        let best = counts.max { $0.value < $1.value || ($0.value == $1.value && ($0.key[0], $0.key[1]) > ($1.key[0], $1.key[1])) }!
        #expect([tok.merges[0].left, tok.merges[0].right] == best.key.map { Int32($0) })
    }

    @Test func refusesAVocabularyTheCorpusCannotFill() throws {
        let dir = tempDir()
        let path = dir.appendingPathComponent("small.txt").path
        try "abab abab".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: GenError.self) { try BPETrainer.train(paths: [path], vocabSize: 400, pattern: .gpt2) }
        #expect(throws: GenError.self) { try BPETrainer.train(paths: [path], vocabSize: 100, pattern: .gpt2) }
    }

    @Test func parallelEncodingEqualsSerial() throws {
        let tok = try BPETrainer.train(paths: [Self.corpus], vocabSize: 512, pattern: .gpt4)
        var bytes = Array(try String(contentsOfFile: Self.corpus, encoding: .utf8).utf8)
        let serial = tok.encode(String(decoding: bytes, as: UTF8.self), allowSpecial: false)
        let n = bytes.count
        for threads in [2, 3, 7] {
            let parallel = bytes.withUnsafeMutableBufferPointer { tok.encodeParallel(bytes: $0.baseAddress!, count: n, threads: threads) }
            #expect(parallel == serial, "\(threads) threads")
        }
    }

    /// Text cut at `lastSafeCut` encodes in two parts to the whole text's ids, for both
    /// patterns, wherever the search ends; cut at any line end instead, it does not (the text's
    /// line ends are ones the merges and patterns treat differently at the end of a text).
    @Test func lastSafeCutKeepsTheIds() throws {
        let dir = tempDir()
        let lines = ["And God saw\n", "it was good \n", "\n\n", "verse 31\n", "Amen.\r\n", "été vu\n", "天地\n", "  indented\n", "so!\n\n"]
        let path = dir.appendingPathComponent("lines.txt").path
        try String(repeating: lines.joined(), count: 3000).write(toFile: path, atomically: true, encoding: .utf8)
        let text = String(repeating: lines.joined(), count: 3)
        let bytes = Array(text.utf8)
        for pattern in SplitPattern.allCases {
            let tok = try BPETrainer.train(paths: [path, Self.corpus], vocabSize: 400, pattern: pattern)
            let whole = tok.encode(text, allowSpecial: false)
            func parts(_ c: Int) -> [Int32] {
                tok.encode(String(decoding: bytes[..<c], as: UTF8.self), allowSpecial: false)
                    + tok.encode(String(decoding: bytes[c...], as: UTF8.self), allowSpecial: false)
            }
            var cuts = Set<Int>()
            for end in 1...bytes.count {
                let c = bytes.withUnsafeBufferPointer { BPETokenizer.lastSafeCut($0.baseAddress!, end, from: 0) }
                if let c { cuts.insert(c); #expect(bytes[c] == 0x0A && c < end) }
            }
            #expect(cuts.count == 3 * 3, "\(pattern): \(cuts.count) cuts")   // "saw", "vu" and "indented" end in a letter
            for c in cuts { #expect(parts(c) == whole, "\(pattern): cut at \(c)") }
            let unsafe = bytes.indices.filter { bytes[$0] == 0x0A && !cuts.contains($0) && parts($0) != whole }
            #expect(!unsafe.isEmpty, "\(pattern): every line end kept the ids")
            // The search looks only from `from` on.
            #expect(bytes.withUnsafeBufferPointer { BPETokenizer.lastSafeCut($0.baseAddress!, 20, from: 12) } == nil)
            #expect(bytes.withUnsafeBufferPointer { BPETokenizer.lastSafeCut($0.baseAddress!, 20, from: 11) } == 11)
        }
    }

    /// A token may end inside a character: the stream holds the bytes back until it is whole.
    @Test func streamingHoldsBackSplitCharacters() {
        var s = Utf8Stream()
        let bytes = Array("é👍🏽x".utf8)
        var out = ""
        for b in bytes { out += s.push([b]) }
        out += s.finish()
        #expect(out == "é👍🏽x")
        var t = Utf8Stream()
        #expect(t.push([0xC3]) == "")
        #expect(t.push([0xA9, 0x41]) == "éA")
    }
}

@Suite struct CharTokenizerTests {
    /// The lookup table ends at the vocabulary's largest scalar: scalars past it, below it and
    /// at the top of Unicode are unknown, and every listed one maps to its place.
    @Test func idsAcrossUnicode() throws {
        let vocab: [Unicode.Scalar] = ["\n", "a", "é", "☃", "😀"]
        let tok = try CharTokenizer(vocabulary: vocab)
        for (i, s) in vocab.enumerated() { #expect(tok.id(of: s.value) == Int32(i)) }
        for v: UInt32 in [0, 0x62, 0x2602, 0x1F601, 0x10FFFF] { #expect(tok.id(of: v) == -1) }
        #expect(try tok.encode("a☃\n😀é") == [1, 3, 0, 4, 2])
        #expect(throws: GenError.self) { try tok.encode("a🙂") }
        let ascii = try CharTokenizer(vocabulary: ["x"])
        #expect(ascii.newlineToken == nil && ascii.id(of: 0x10FFFF) == -1)
    }
}
