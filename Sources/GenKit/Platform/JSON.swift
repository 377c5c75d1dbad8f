/// A JSON value, as gen reads it (Hugging Face's config and tokenizer files, safetensors
/// headers, PEFT adapter configs, JSON lines of prompts and preferences) and writes it. gen
/// parses JSON itself so that its binary needs only FoundationEssentials (Foundation's own
/// `JSONSerialization` would load the whole Foundation library and ICU into every process).
public enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    /// A number written without a fraction or exponent that fits an `Int`.
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    /// Parses one JSON text (RFC 8259: one value, whitespace around it).
    /// - Throws: `JSON.ParseError` at the first byte that is not valid JSON.
    public static func parse<Bytes: Collection>(_ bytes: Bytes) throws -> JSON where Bytes.Element == UInt8 {
        let parsed = try bytes.withContiguousStorageIfAvailable { try parse(UnsafeRawBufferPointer($0)) }
        if let parsed { return parsed }
        return try Array(bytes).withUnsafeBytes { try parse($0) }
    }

    public static func parse(_ text: String) throws -> JSON {
        var text = text
        return try text.withUTF8 { try parse(UnsafeRawBufferPointer($0)) }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSON {
        var p = Parser(bytes: bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.at == bytes.count else { throw ParseError(offset: p.at, reason: "text after the value") }
        return v
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let offset: Int
        public let reason: String
        public var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    /// The JSON object `text` holds, for a message's `name` (a file, or a file's line).
    /// - Throws: `GenError` naming `name`: where the text stops being JSON (line and column,
    ///   from 1, as an editor shows them; the column alone for text of one line), or what it
    ///   holds instead of an object.
    public static func object<Bytes: Collection>(_ text: Bytes, name: String) throws -> [String: JSON] where Bytes.Element == UInt8 {
        let value: JSON
        do { value = try parse(text) } catch let e as ParseError {
            let before = Array(text.prefix(e.offset)), newline = UInt8(ascii: "\n")
            let line = 1 + before.count(where: { $0 == newline })
            let lineStart = before.lastIndex(of: newline).map { $0 + 1 } ?? 0
            let column = String(decoding: before[lineStart...], as: UTF8.self).count + 1   // characters, not bytes
            let at = text.contains(newline) ? "line \(line), column \(column)" : "column \(column)"
            throw GenError("\(name): invalid JSON at \(at): \(e.reason)")
        }
        guard let o = value.object else { throw GenError("\(name): expected a JSON object, found \(value.kind)") }
        return o
    }

    /// What the value is, as a message names it: "an array", "a string", ….
    public var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    // MARK: Reading values

    public subscript(key: String) -> JSON? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
    public var object: [String: JSON]? { if case .object(let o) = self { return o }; return nil }
    public var array: [JSON]? { if case .array(let a) = self { return a }; return nil }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var isNull: Bool { self == .null }
    /// An integer, or a number with an integral value that fits an `Int` (1.0 is 1).
    public var int: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d): return Int(exactly: d)
        default: return nil
        }
    }
    /// Any number.
    public var double: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    /// An array of strings only.
    public var strings: [String]? { elements(\.string) }
    /// An array of integers only.
    public var ints: [Int]? { elements(\.int) }

    /// An array whose every element `value` reads, or nil.
    func elements<T>(_ value: (JSON) -> T?) -> [T]? {
        guard let a = array else { return nil }
        var out: [T] = []
        out.reserveCapacity(a.count)
        for v in a { guard let x = value(v) else { return nil }; out.append(x) }
        return out
    }

    // MARK: Writing

    /// The value as JSON text, object keys sorted; `pretty` indents by two spaces, one member
    /// or element per line.
    public func serialized(pretty: Bool = false) -> String {
        var out = ""
        write(into: &out, pretty: pretty, indent: 0)
        return out
    }

    func write(into out: inout String, pretty: Bool, indent: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += d.isFinite ? "\(d)" : "null"   // 16.0 stays a double when read back
        case .string(let s): out += jsonString(s)
        case .array(let a):
            if a.isEmpty { out += "[]"; return }
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                if pretty { out += "\n" + String(repeating: " ", count: 2 * (indent + 1)) }
                v.write(into: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { out += "\n" + String(repeating: " ", count: 2 * indent) }
            out += "]"
        case .object(let o):
            if o.isEmpty { out += "{}"; return }
            out += "{"
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                if pretty { out += "\n" + String(repeating: " ", count: 2 * (indent + 1)) }
                out += jsonString(k) + (pretty ? " : " : ":")
                o[k]!.write(into: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { out += "\n" + String(repeating: " ", count: 2 * indent) }
            out += "}"
        }
    }
}

/// A recursive-descent parser over UTF-8 bytes.
private struct Parser {
    let bytes: UnsafeRawBufferPointer
    var at = 0
    /// Nesting deeper than this is refused (a hostile file cannot exhaust the stack).
    static let maxDepth = 512

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func fail(_ reason: String) -> JSON.ParseError { JSON.ParseError(offset: at, reason: reason) }

    @inline(__always) var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

    mutating func skipSpace() {
        while at < bytes.count {
            switch bytes[at] {
            case 0x20, 0x09, 0x0A, 0x0D: at += 1
            default: return
            }
        }
    }

    mutating func expect(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard at + n <= bytes.count else { throw fail("unexpected end") }
        for i in 0..<n where bytes[at + i] != word.utf8Start[i] { throw fail("unexpected character") }
        at += n
    }

    mutating func value(depth: Int) throws -> JSON {
        guard depth < Parser.maxDepth else { throw fail("nested too deeply") }
        guard let c = peek else { throw fail("unexpected end") }
        switch c {
        case UInt8(ascii: "{"):
            at += 1
            // Members are gathered first and the dictionary made once at its size (a later
            // duplicate key wins, as in JSONSerialization).
            var members: [(String, JSON)] = []
            skipSpace()
            if peek == UInt8(ascii: "}") { at += 1; return .object([:]) }
            while true {
                skipSpace()
                guard peek == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let k = try string()
                skipSpace()
                guard peek == UInt8(ascii: ":") else { throw fail("expected ':'") }
                at += 1
                skipSpace()
                members.append((k, try value(depth: depth + 1)))
                skipSpace()
                guard let d = peek else { throw fail("unexpected end") }
                at += 1
                if d == UInt8(ascii: "}") { return .object(Dictionary(members, uniquingKeysWith: { _, last in last })) }
                guard d == UInt8(ascii: ",") else { at -= 1; throw fail("expected ',' or '}'") }
            }
        case UInt8(ascii: "["):
            at += 1
            var a: [JSON] = []
            skipSpace()
            if peek == UInt8(ascii: "]") { at += 1; return .array(a) }
            while true {
                skipSpace()
                a.append(try value(depth: depth + 1))
                skipSpace()
                guard let d = peek else { throw fail("unexpected end") }
                at += 1
                if d == UInt8(ascii: "]") { return .array(a) }
                guard d == UInt8(ascii: ",") else { at -= 1; throw fail("expected ',' or ']'") }
            }
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character")
        }
    }

    mutating func digits() -> Int {
        let start = at
        while at < bytes.count, bytes[at] >= 0x30, bytes[at] <= 0x39 { at += 1 }
        return at - start
    }

    mutating func number() throws -> JSON {
        let start = at
        if peek == UInt8(ascii: "-") { at += 1 }
        let intStart = at
        let n = digits()
        guard n > 0 else { throw fail("expected a digit") }
        guard !(n > 1 && bytes[intStart] == UInt8(ascii: "0")) else { throw fail("leading zero") }
        var integral = true
        if peek == UInt8(ascii: ".") {
            at += 1
            integral = false
            guard digits() > 0 else { throw fail("expected a digit after '.'") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            at += 1
            integral = false
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { throw fail("expected a digit in the exponent") }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
        if integral, let i = Int(text) { return .int(i) }
        guard let d = Double(text), d.isFinite else { throw JSON.ParseError(offset: start, reason: "number out of range") }
        return .double(d)
    }

    mutating func hex4() throws -> UInt32 {
        guard at + 4 <= bytes.count else { throw fail("unexpected end in \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[at]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | UInt32(d)
            at += 1
        }
        return v
    }

    /// A string at `at` (its opening quote); escapes resolved, lone surrogates as U+FFFD.
    mutating func string() throws -> String {
        at += 1
        let start = at
        // Fast path: no escapes.
        while at < bytes.count {
            let c = bytes[at]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
                at += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            guard c >= 0x20 else { throw fail("control character in a string") }
            at += 1
        }
        var out: [UInt8] = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<at]))
        while true {
            guard at < bytes.count else { throw fail("unterminated string") }
            let c = bytes[at]
            at += 1
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            guard c >= 0x20 else { at -= 1; throw fail("control character in a string") }
            guard c == UInt8(ascii: "\\") else { out.append(c); continue }
            guard at < bytes.count else { throw fail("unterminated string") }
            let e = bytes[at]
            at += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var u = try hex4()
                if u >= 0xD800 && u < 0xDC00, at + 6 <= bytes.count,
                   bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") {
                    let save = at
                    at += 2
                    let low = try hex4()
                    if low >= 0xDC00 && low < 0xE000 {
                        u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        at = save
                    }
                }
                let scalar = Unicode.Scalar(u) ?? "\u{FFFD}"
                out.append(contentsOf: String(scalar).utf8)
            default: at -= 1; throw fail("bad escape")
            }
        }
    }
}
