import GenKernels
/// Character-level tokenizer: one token per Unicode scalar, ids in the sorted order of the
/// scalars of the training corpus ("\r\n" is two tokens).
public final class CharTokenizer: Tokenizer {
    public let vocabulary: [Unicode.Scalar]
    /// scalar value -> id, -1 where absent, for the scalars up to the vocabulary's largest
    /// (at least ASCII): a few hundred bytes for most corpora, where a table of all of Unicode
    /// (4.4 MB) cost every start 4 ms of filling pages.
    let table: [Int32]

    public init(vocabulary: [Unicode.Scalar]) throws {
        guard !vocabulary.isEmpty else { throw GenError("the vocabulary is empty") }
        self.vocabulary = vocabulary
        var table = [Int32](repeating: -1, count: max(128, Int(vocabulary.lazy.map(\.value).max()!) + 1))
        for (i, s) in vocabulary.enumerated() {
            if table[Int(s.value)] >= 0 { throw GenError("the vocabulary lists \(describe(s)) twice") }
            table[Int(s.value)] = Int32(i)
        }
        self.table = table
    }

    /// The tokenizer of a corpus: its sorted set of scalars.
    public convenience init(scalarsPresent present: [Bool]) throws {
        var v: [Unicode.Scalar] = []
        for (value, here) in present.enumerated() where here { v.append(Unicode.Scalar(UInt32(value))!) }
        try self.init(vocabulary: v)
    }

    public var vocabSize: Int { vocabulary.count }
    public var kind: String { "char" }

    @inline(__always)
    public func id(of scalarValue: UInt32) -> Int32 { Int(scalarValue) < table.count ? table[Int(scalarValue)] : -1 }

    public func encode(_ text: String) throws -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            let token = id(of: s.value)
            if token < 0 { throw GenError("the model does not know the character \(describe(s)); its vocabulary has \(vocabSize) characters") }
            out.append(token)
        }
        return out
    }

    public func bytes(of id: Int32) -> [UInt8] {
        guard id >= 0 && Int(id) < vocabulary.count else { return [] }
        return Array(String(Character(vocabulary[Int(id)])).utf8)
    }

    public var endOfText: Int32? { nil }

    public var newlineToken: Int32? {
        let id = table[10]
        return id >= 0 ? id : nil
    }

    public var json: String {
        "{\"type\":\"char\",\"vocab\":[" + vocabulary.map { jsonString(String(Character($0))) }.joined(separator: ",") + "]}"
    }
}

/// A character as a person reads it in a message: 'x' (U+0078), or just U+000A for what
/// `quoted` also shows by its code (controls, format characters, line separators).
public func describe(_ s: Unicode.Scalar) -> String {
    let code = "U+" + String(s.value, radix: 16, uppercase: true).leftPadded(to: 4)
    if isUnprintable(s) { return code }
    return "'\(Character(s))' (\(code))"
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
