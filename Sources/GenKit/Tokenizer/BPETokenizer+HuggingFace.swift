import GenKernels
import FoundationEssentials
import Glibc

/// GPT-2's reversible map from bytes to printable characters, used by Hugging Face's
/// `tokenizer.json` and GPT-2's `vocab.json`/`merges.txt` to write byte strings as text.
public let byteToUnicode: [Character] = {
    var bs = Array(33...126) + Array(161...172) + Array(174...255)
    var cs = bs
    var n = 0
    for b in 0..<256 where !bs.contains(b) {
        bs.append(b)
        cs.append(256 + n)
        n += 1
    }
    var table = [Character](repeating: " ", count: 256)
    for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
    return table
}()

extension BPETokenizer {
    /// Reads a Hugging Face `tokenizer.json` holding a BPE model with a ByteLevel
    /// pre-tokenizer (GPT-2's split) or a Split by GPT-4's pattern followed by ByteLevel.
    public static func huggingFace(path: String) throws -> BPETokenizer {
        guard let data = FileManager.default.contents(atPath: path) else { throw GenError("cannot read \(path)") }
        return try huggingFace(json: .object(JSON.object(data, name: path)), path: path)
    }

    /// The same from the file's JSON, already parsed (`path` names it in errors).
    public static func huggingFace(json obj: JSON, path: String) throws -> BPETokenizer {
        if obj["type"]?.string == "bpe" { return try BPETokenizer(json: obj) }   // gen's own form
        guard let model = obj["model"], model["type"]?.string == "BPE",
              let vocab = model["vocab"].flatMap(integerMap), let rawMerges = model["merges"]?.array else {
            throw GenError("\(path) is not a Hugging Face BPE tokenizer (no model.type \"BPE\" with vocab and merges)")
        }
        let pattern = try splitPattern(of: obj["pre_tokenizer"], path: path)
        let merges: [(String, String)] = try rawMerges.map { m in
            if let s = m.string {
                let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw GenError("\(path): bad merge \"\(s)\"") }
                return (String(parts[0]), String(parts[1]))
            }
            if let a = m.strings, a.count == 2 { return (a[0], a[1]) }
            throw GenError("\(path): bad merge entry")
        }
        var special: [String: Int32] = [:]
        for t in obj["added_tokens"]?.array ?? [] {
            if let content = t["content"]?.string, let id = t["id"]?.int, vocab[content] == nil || t["special"]?.bool == true {
                special[content] = try tokenID(id)
            }
        }
        return try fromByteLevel(vocab: vocab, merges: merges, special: special, pattern: pattern, name: path)
    }

    /// Reads GPT-2's `vocab.json` and `merges.txt` (GPT-2's split pattern).
    public static func gpt2Files(vocab vocabPath: String, merges mergesPath: String) throws -> BPETokenizer {
        guard let vdata = FileManager.default.contents(atPath: vocabPath),
              let vocab = (try? JSON.parse(vdata)).flatMap(integerMap) else {
            throw GenError("\(vocabPath) is not a vocab.json (a map of token to id)")
        }
        guard let mdata = FileManager.default.contents(atPath: mergesPath) else { throw GenError("cannot read \(mergesPath)") }
        let mtext = try Corpus.text(mdata, name: mergesPath)
        var merges: [(String, String)] = []
        for line in mtext.split(separator: "\n", omittingEmptySubsequences: true) where !line.hasPrefix("#version") {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { throw GenError("\(mergesPath): bad merge line \"\(line)\"") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        var special: [String: Int32] = [:]
        if let id = vocab["<|endoftext|>"] { special["<|endoftext|>"] = try tokenID(id) }
        return try fromByteLevel(vocab: vocab, merges: merges, special: special, pattern: .gpt2, name: vocabPath)
    }

    static func splitPattern(of pre: JSON?, path: String) throws -> SplitPattern {
        guard let pre, let type = pre["type"]?.string else {
            throw GenError("\(path): no pre_tokenizer; gen reads byte-level BPE (ByteLevel pre-tokenizer)")
        }
        if type == "ByteLevel" {
            if pre["add_prefix_space"]?.bool == true { throw GenError("\(path): add_prefix_space is not supported") }
            return .gpt2
        }
        if type == "Sequence", let list = pre["pretokenizers"]?.array, list.count == 2,
           list[0]["type"]?.string == "Split", list[1]["type"]?.string == "ByteLevel",
           let regex = list[0]["pattern"]?["Regex"]?.string {
            if let p = SplitPattern.allCases.first(where: { $0.regex == regex }) { return p }
            throw GenError("\(path): its split pattern is neither GPT-2's nor GPT-4's")
        }
        throw GenError("\(path): pre_tokenizer \(type) is not supported (ByteLevel, or Split + ByteLevel)")
    }

    static func fromByteLevel(vocab: [String: Int], merges: [(String, String)], special: [String: Int32],
                              pattern: SplitPattern, name: String) throws -> BPETokenizer {
        var byteIDs = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            guard let id = vocab[String(byteToUnicode[b])] else {
                throw GenError("\(name): no token for byte \(b); gen needs all 256 byte tokens")
            }
            byteIDs[b] = try tokenID(id)
        }
        var triples: [(left: Int32, right: Int32, result: Int32)] = []
        triples.reserveCapacity(merges.count)
        for (a, b) in merges {
            guard let l = vocab[a], let r = vocab[b], let c = vocab[a + b] else {
                throw GenError("\(name): merge \"\(a) \(b)\" names a token not in the vocabulary")
            }
            triples.append((try tokenID(l), try tokenID(r), try tokenID(c)))
        }
        return try BPETokenizer(pattern: pattern, byteIDs: byteIDs, merges: triples, special: special)
    }

    /// This tokenizer as a Hugging Face `tokenizer.json` that Python's `tokenizers` loads.
    public var huggingFaceJSON: String {
        func tokenString(_ id: Int) -> String { String(tokenBytes[id].map { byteToUnicode[Int($0)] }) }
        let specialIDs = Set(special.values)
        var vocabEntries: [String] = []
        for id in 0..<tokenBytes.count where !specialIDs.contains(Int32(id)) {
            vocabEntries.append("\(jsonString(tokenString(id))):\(id)")
        }
        for (s, id) in special.sorted(by: { $0.value < $1.value }) { vocabEntries.append("\(jsonString(s)):\(id)") }
        let mergeEntries = merges.map { "[\(jsonString(tokenString(Int($0.left)))),\(jsonString(tokenString(Int($0.right))))]" }
        let added = special.sorted { $0.value < $1.value }.map {
            "{\"id\":\($0.value),\"content\":\(jsonString($0.key)),\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}"
        }
        let pre: String
        switch pattern {
        case .gpt2:
            pre = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}"
        case .gpt4:
            pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\(jsonString(pattern.regex))},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}"
        }
        return """
        {"version":"1.0","truncation":null,"padding":null,"added_tokens":[\(added.joined(separator: ","))],\
        "normalizer":null,"pre_tokenizer":\(pre),"post_processor":null,\
        "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},\
        "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,\
        "fuse_unk":false,"byte_fallback":false,"ignore_merges":false,\
        "vocab":{\(vocabEntries.joined(separator: ","))},"merges":[\(mergeEntries.joined(separator: ","))]}}
        """
    }
}

extension BPETokenizer {
    /// Writes `huggingFaceJSON` to `path` atomically (temporary file, fsync, rename).
    public func writeHuggingFaceJSON(to path: String) throws {
        let bytes = Array(huggingFaceJSON.utf8)
        try bytes.withUnsafeBytes { try SafeTensorsWriter.writeRaw($0, to: path) }
    }
}

/// A JSON object of integers (a vocabulary: token to id), or nil.
private func integerMap(_ v: JSON) -> [String: Int]? {
    guard let o = v.object else { return nil }
    var out: [String: Int] = [:]
    out.reserveCapacity(o.count)
    for (k, x) in o {
        guard let i = x.int else { return nil }
        out[k] = i
    }
    return out
}
