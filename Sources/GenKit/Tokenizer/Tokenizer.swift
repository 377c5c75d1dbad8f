import GenKernels
import FoundationEssentials
import Glibc

/// Turns text into token ids and back. Character-level and BPE tokenizers plug in here.
public protocol Tokenizer: AnyObject {
    var vocabSize: Int { get }
    /// "char" or "bpe".
    var kind: String { get }
    /// Token ids of `text`; throws `GenError` naming a character the vocabulary lacks.
    func encode(_ text: String) throws -> [Int32]
    /// The UTF-8 bytes token `id` stands for (a token may end inside a character).
    func bytes(of id: Int32) -> [UInt8]
    /// The token that stands for "\n", if there is one.
    var newlineToken: Int32? { get }
    /// GPT-2's `<|endoftext|>`, which separates documents, if the vocabulary has it.
    var endOfText: Int32? { get }
    /// The JSON stored as a checkpoint's `tokenizer` metadata.
    var json: String { get }
}

extension Tokenizer {
    /// The text of `ids`; invalid UTF-8 (a character cut at the end) decodes to U+FFFD.
    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes += self.bytes(of: id) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Builds the tokenizer a checkpoint's `tokenizer` metadata describes.
public func makeTokenizer(json: String) throws -> Tokenizer {
    guard let obj = try? JSON.parse(json) else { throw GenError("the tokenizer metadata is not valid JSON") }
    return try makeTokenizer(parsed: obj)
}

/// The same from the metadata's JSON, already parsed.
public func makeTokenizer(parsed obj: JSON) throws -> Tokenizer {
    guard let type = obj["type"]?.string else {
        throw GenError("the tokenizer metadata is not valid JSON")
    }
    switch type {
    case "char":
        guard let vocab = obj["vocab"]?.strings else { throw GenError("the char tokenizer has no vocab list") }
        var scalars: [Unicode.Scalar] = []
        for s in vocab {
            let u = Array(s.unicodeScalars)
            guard u.count == 1 else { throw GenError("char tokenizer entry \(jsonString(s)) is not one character") }
            scalars.append(u[0])
        }
        return try CharTokenizer(vocabulary: scalars)
    case "bpe":
        return try BPETokenizer(json: obj)
    default:
        throw GenError("unknown tokenizer type \"\(type)\" (this gen knows \"char\" and \"bpe\")")
    }
}

/// Emits text from a stream of token bytes, holding back a UTF-8 character until it is whole.
public struct Utf8Stream {
    var pending: [UInt8] = []
    public init() {}

    /// Adds `bytes`; returns the text that is now complete.
    public mutating func push(_ bytes: [UInt8]) -> String {
        pending += bytes
        // Find where the last complete character ends.
        var end = pending.count
        var i = pending.count - 1
        var back = 0
        while i >= 0 && back < 4 {
            let b = pending[i]
            if b & 0xC0 != 0x80 {
                let need = UTF8Decoder.length(lead: b)
                if pending.count - i < need { end = i }
                break
            }
            i -= 1
            back += 1
        }
        let out = String(decoding: pending[0..<end], as: UTF8.self)
        pending.removeFirst(end)
        return out
    }

    /// Whatever is left (an incomplete character decodes to U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }
}
