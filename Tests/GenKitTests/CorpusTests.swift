import Foundation
import Testing
import GenKit
import TestScratch

/// UTF-8 checks of every kind of input (`Corpus.text` for prompts, lines and small files,
/// `Corpus.scan` for corpora read in chunks): one message form, the offset of the byte that
/// starts the bad character, and the same verdict and offset as Swift's own UTF-8 parser.
@Suite struct CorpusTests {
    /// The message `Corpus.text` gives for `bytes`, or nil when it accepts them.
    func refusal(_ bytes: [UInt8], name: String = "x") -> String? {
        do { _ = try Corpus.text(Data(bytes), name: name); return nil } catch let e as GenError { return e.message } catch { return "\(error)" }
    }

    /// Where Swift's parser finds the first bad character of `bytes` (nil when they are UTF-8).
    func swiftsOffset(_ bytes: [UInt8]) -> Int? {
        var parser = Unicode.UTF8.ForwardParser(), it = bytes.makeIterator(), at = 0
        while true {
            switch parser.parseScalar(from: &it) {
            case .valid(let s): at += s.count
            case .emptyInput: return nil
            case .error: return at
            }
        }
    }

    @Test func eachKindOfBadByteIsNamed() {
        #expect(refusal(Array("café\0\n".utf8)) == nil)   // NUL is text here (prompts, lines)
        #expect(refusal(Array("caf".utf8) + [0xE9] + Array(" au lait".utf8), name: "l.txt")
                == "l.txt is not valid UTF-8: byte 0xE9 at offset 3 (invalid continuation byte)")
        #expect(refusal([0x61, 0xFF, 0x62]) == "x is not valid UTF-8: byte 0xFF at offset 1 (invalid start byte)")
        #expect(refusal([0x61, 0x80]) == "x is not valid UTF-8: byte 0x80 at offset 1 (invalid start byte)")
        #expect(refusal([0x61, 0xC0, 0xAF]) == "x is not valid UTF-8: byte 0xC0 at offset 1 (invalid start byte)")
        #expect(refusal([0x61, 0xED, 0xA0, 0x80]) == "x is not valid UTF-8: byte 0xED at offset 1 (an overlong, surrogate or out-of-range character)")
        #expect(refusal([0x61, 0xE0, 0x80, 0x80]) == "x is not valid UTF-8: byte 0xE0 at offset 1 (an overlong, surrogate or out-of-range character)")
        #expect(refusal([0x61, 0xF4, 0x90, 0x80, 0x80]) == "x is not valid UTF-8: byte 0xF4 at offset 1 (an overlong, surrogate or out-of-range character)")
        #expect(refusal([0x61, 0x62, 0xE2, 0x82]) == "x is not valid UTF-8: byte 0xE2 at offset 2 (its character is cut off at the end)")
    }

    /// Random bytes near UTF-8 (valid text with a few bytes replaced, cut or inserted): accepted
    /// exactly when Swift accepts them, refused at Swift's offset, with the byte found there.
    @Test func agreesWithSwiftsParser() {
        var rng = Random(seed: 11)
        let pieces = ["a", "é", "€", "😀", "\n", "z", "ß"].map { Array($0.utf8) }
        var refused = 0
        for _ in 0..<3000 {
            var b: [UInt8] = []
            for _ in 0..<Int(rng.next() % 12) { b += pieces[Int(rng.next() % UInt64(pieces.count))] }
            for _ in 0..<Int(rng.next() % 3) where !b.isEmpty {
                let i = Int(rng.next() % UInt64(b.count))
                switch rng.next() % 3 {
                case 0: b[i] = UInt8(truncatingIfNeeded: rng.next())
                case 1: b.remove(at: i)
                default: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: i)
                }
            }
            let message = refusal(b)
            guard let at = swiftsOffset(b) else {
                #expect(message == nil, "\(b)")
                continue
            }
            refused += 1
            let byte = "0x" + String(b[at], radix: 16, uppercase: true)
            #expect(message?.hasPrefix("x is not valid UTF-8: byte \(byte) at offset \(at) (") == true, "\(b): \(message ?? "accepted")")
        }
        #expect(refused > 500)
    }

    /// A corpus read in 1 MB chunks names the same offset when the bad character straddles a
    /// chunk's end, and the last byte when the file ends inside a character; a corpus mapped
    /// whole (`mapValidated`, which checks without decoding) says the same.
    @Test func corpusOffsetsCrossChunks() throws {
        let dir = tempDir()
        func scanError(_ bytes: [UInt8]) throws -> String? {
            let path = dir.path + "/c.txt"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            var mapped: String? = nil
            do { _ = try Corpus.mapValidated(path) } catch let e as GenError { mapped = e.message }
            do { try Corpus.scan([path]) { _ in } } catch let e as GenError {
                #expect(mapped == e.message)
                return e.message
            }
            #expect(mapped == nil, "\(mapped ?? "")")
            return nil
        }
        let chunk = 1 << 20
        let a = [UInt8](repeating: 0x61, count: chunk - 1)
        #expect(try scanError(a + Array("é€".utf8)) == nil)
        #expect(try scanError(a + [0xE9, 0x20]) == dir.path + "/c.txt is not valid UTF-8: byte 0xE9 at offset \(chunk - 1) (invalid continuation byte)")
        #expect(try scanError(a + [0x61, 0x61, 0xFF]) == dir.path + "/c.txt is not valid UTF-8: byte 0xFF at offset \(chunk + 1) (invalid start byte)")
        #expect(try scanError(a + [0xF0, 0x9F, 0x98]) == dir.path + "/c.txt is not valid UTF-8: byte 0xF0 at offset \(chunk - 1) (its character is cut off at the end)")
        #expect(try scanError(a + [0x61, 0xFF]) == dir.path + "/c.txt is not valid UTF-8: byte 0xFF at offset \(chunk) (invalid start byte)")
        #expect(try scanError(a + [0x61, 0x00]) == dir.path + "/c.txt holds a NUL byte at offset \(chunk): it looks like a binary file, not text")
    }

    /// Messages echo the user's text and characters through one rule: controls (C0, DEL, C1),
    /// format characters and line and paragraph separators by their codes, the rest as they are.
    @Test func messagesShowUnprintableCharactersByCode() {
        for (v, shown) in [(0x41, true), (0xE9, true), (0x20, true), (0x09, false), (0x0A, false), (0x1B, false), (0x7F, false),
                           (0x85, false), (0x9B, false), (0xA0, true), (0x200E, false), (0x2028, false), (0x2029, false),
                           (0xFEFF, false), (0x1F600, true)] {
            let s = Unicode.Scalar(UInt32(v))!
            let code = String(v, radix: 16, uppercase: true)
            #expect(quoted(String(s)) == (shown ? "'\(s)'" : "'\\u{\(code)}'"), "U+\(code)")
            #expect(describe(s).hasPrefix("'") == shown && describe(s).hasSuffix(code + (shown ? ")" : "")), "U+\(code): \(describe(s))")
        }
        #expect(quoted("abc\u{1B}[2Jdef", limit: 5) == "'abc\\u{1B}[…'")
    }
}
