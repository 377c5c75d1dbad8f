import Foundation
import Testing
import GenKit

/// gen's own JSON reader and writer against Foundation's `JSONSerialization` (which the tests
/// may load; gen's binary does not): the same values for every JSON file among the fixtures
/// and for hand-written edge cases, the same verdict on broken texts, and printf-style
/// formatting equal to `String(format:)`.
@Suite struct JSONTests {
    /// Whether gen's value `j` is Foundation's value `a`.
    func same(_ j: JSON, _ a: Any) -> Bool {
        switch j {
        case .null: return a is NSNull
        case .bool(let b): return (a as? Bool) == b
        case .int(let i): return number(a) == Double(i)
        case .double(let d): return number(a) == d
        case .string(let s): return (a as? String) == s
        case .array(let xs):
            guard let ys = a as? [Any], ys.count == xs.count else { return false }
            return zip(xs, ys).allSatisfy { same($0, $1) }
        case .object(let o):
            guard let d = a as? [String: Any], d.count == o.count else { return false }
            return o.allSatisfy { k, v in d[k].map { same(v, $0) } ?? false }
        }
    }

    /// Foundation's number as a Double (it reads some decimals as NSDecimalNumber, whose
    /// doubleValue can differ from the nearest double in the last bit).
    func number(_ a: Any) -> Double? {
        if let d = a as? NSDecimalNumber { return Double(d.description) }
        return (a as? NSNumber)?.doubleValue
    }

    func foundation(_ data: Data) -> Any? {
        try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
    }

    @Test func fixturesReadAsFoundationReadsThem() throws {
        let root = Bundle.module.resourcePath! + "/Fixtures"
        let files = FileManager.default.enumerator(atPath: root)!.compactMap { $0 as? String }.filter { $0.hasSuffix(".json") }
        #expect(files.count >= 10)
        for f in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: root + "/" + f))
            let mine = try JSON.parse(data)
            let theirs = try #require(foundation(data), "\(f)")
            #expect(same(mine, theirs), "\(f)")
            // What gen writes reads back as the same value, compact and indented.
            #expect(try JSON.parse(mine.serialized()) == mine, "\(f)")
            #expect(try JSON.parse(mine.serialized(pretty: true)) == mine, "\(f)")
        }
    }

    @Test func edgeCases() throws {
        let texts = [
            #"{"a": [1, -2, 3.5, -0.25e-3, 1E3, 12345678901234, true, false, null], "b": {}, "c": []}"#,
            #"["\u0120Hello", "\ud83d\ude00", "tab\tq\"b\\s\/n\nr\r\b\f", "é", "\u00e9", ""]"#,
            "  \n\t[ 1 , 2 ]\r\n ",
            #"{"k": "v", "k": "w"}"#,
            #""just a string""#, "0", "-0", "1.0", "9007199254740993",
        ]
        for t in texts {
            let mine = try JSON.parse(t)
            let theirs = try #require(foundation(Data(t.utf8)), "\(t)")
            #expect(same(mine, theirs), "\(t)")
        }
        let v = try JSON.parse(#"{"n": 1.0, "m": 2, "x": 2.5, "s": ["a", "b"], "i": [1, 2], "mixed": [1, "a"]}"#)
        #expect(v["n"]?.int == 1 && v["m"]?.int == 2 && v["x"]?.int == nil && v["x"]?.double == 2.5)
        #expect(v["s"]?.strings == ["a", "b"] && v["i"]?.ints == [1, 2] && v["mixed"]?.ints == nil && v["mixed"]?.strings == nil)
        #expect(v["missing"] == nil && v["s"]?.object == nil)
        #expect(try JSON.parse(#""\ud83d\ude00""#).string == "😀")
    }

    @Test func brokenTextsAreRefused() throws {
        let broken = ["", " ", "{", "}", "[1,]", "[,1]", #"{"a":1,}"#, #"{"a" 1}"#, "{a:1}", "01", "-", "1.", ".5", "1e", "+1",
                      "tru", "nul", "[1] x", "[1][2]", #""\x""#, "\"a\nb\"", #""\u12""#, "\"open", "[\"a\" \"b\"]", "NaN",
                      String(repeating: "[", count: 100_000)]
        for t in broken {
            #expect(throws: JSON.ParseError.self, "\(t.prefix(20))") { try JSON.parse(t) }
            // Foundation also accepts a comma before the closing bracket; gen keeps to RFC 8259.
            if t.count < 1000 && !t.hasSuffix(",]") && !t.hasSuffix(",}") { #expect(foundation(Data(t.utf8)) == nil, "Foundation accepts \(t)") }
        }
        // Bytes that are not UTF-8 inside a string do not crash it (they read as U+FFFD).
        let bad: [UInt8] = [0x22, 0xFF, 0xFE, 0x22]
        #expect(try JSON.parse(bad).string == "\u{FFFD}\u{FFFD}")
    }

    /// Every one-byte change of a fixture's text: gen's reader never crashes, and when both
    /// readers accept the text they read the same value.
    @Test func mutatedTextsReadAsFoundationReadsThem() throws {
        let base = Array(#"{"model": {"type": "BPE", "vocab": {"a": 0, "\u0120b": 1}, "merges": ["a b", ["c", "d"]]}, "x": [1.5, -2, true, null]}"#.utf8)
        let bytes: [UInt8] = Array(#"{}[],:"\ u0e-+.1 tfn"#.utf8) + [0x00, 0x0A, 0xC3, 0xFF]
        var agreed = 0
        for i in 0..<base.count {
            for b in bytes where b != base[i] {
                var t = base
                t[i] = b
                let mine = try? JSON.parse(t)
                guard let mine, let theirs = foundation(Data(t)) else { continue }
                #expect(same(mine, theirs), "\(String(decoding: t, as: UTF8.self))")
                agreed += 1
            }
        }
        #expect(agreed > 100)
    }

    /// What gen writes for a PEFT adapter config reads as the value Foundation wrote before.
    @Test func indentedOutputHoldsFoundationsValue() throws {
        let o: JSON = .object(["peft_type": .string("LORA"), "r": .int(8), "lora_alpha": .double(16), "lora_dropout": .double(Double(Float(0.05))),
                               "target_modules": .array([.string("c_attn"), .string("c_fc")]), "use_dora": .bool(false), "empty": .object([:])])
        let any: [String: Any] = ["peft_type": "LORA", "r": 8, "lora_alpha": 16.0, "lora_dropout": Double(Float(0.05)),
                                  "target_modules": ["c_attn", "c_fc"], "use_dora": false, "empty": [String: Any]()]
        let theirs = try JSONSerialization.data(withJSONObject: any, options: [.prettyPrinted, .sortedKeys])
        #expect(same(try JSON.parse(o.serialized(pretty: true)), foundation(theirs)!))
    }

    @Test func formattingIsPrintfs() {
        let cases: [(String, [CVarArg])] = [
            ("%.2f ms/step, %.0f tokens/s, %.1f GFLOP/s", [3128.756, 1309.4, 89.25]), ("%.3g GB", [1234.5678]),
            ("%.4f nats/token, perplexity %.3f (%d tokens)", [3.53180, 34.1999, 12345]), ("%d:%02d:%02d", [1, 2, 3]), ("%ld tokens, %ld bytes", [12345, 4_000_000_000]),
            ("%.2e", [0.0003]), ("%.1fk", [12.34]), ("\\u%04x", [UInt32(7)]), ("%.4f", [Float(0.123456)]),
        ]
        for (f, args) in cases {
            #expect(cFormat(f, arguments: args) == String(format: f, arguments: args), "\(f)")
        }
        #expect(cFormat("%.3f", 1.0) == "1.000")
        // A Swift Int is C's long: %ld prints it whole past 32 bits (gen's counts of tokens and bytes).
        #expect(cFormat("%ld tokens, %02ld:%02ld", 5_000_000_000, 1, 2) == "5000000000 tokens, 01:02")
        #expect(cFormat(String(repeating: "x", count: 300) + "%d", 7) == String(repeating: "x", count: 300) + "7")
        #expect("  a b \n".trimmed() == "a b" && " \t\n".trimmed() == "" && "x".trimmed() == "x")
    }
}
