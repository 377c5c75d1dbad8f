import FoundationEssentials
import Glibc
import GenKit

/// One option of a command: `--name <value>` (also `--name=value`), or a flag `--name`.
struct OptionSpec {
    var name: String
    /// A one-letter form, `-x <value>`.
    var short: Character? = nil
    /// Other long names accepted for it (llama.cpp's and nanoGPT's, where they do not clash).
    var aliases: [String] = []
    /// The value's placeholder; nil for a flag.
    var value: String?
    var help: String
    var defaultValue: String? = nil
    var repeated = false
    var hidden = false
    /// Must be given (it has no default).
    var required = false

    var display: String {
        let long = "--\(name)" + (value.map { " <\($0)>" } ?? "")
        return short.map { "-\($0), " + long } ?? long
    }
}

/// A positional argument.
struct ArgumentSpec {
    var name: String
    var help: String
    var repeated = false
    var optional = false

    var display: String { "<\(name)>" + (repeated ? " ..." : "") }
}

/// A command's interface, from which parsing, checking and help are all made
/// (swift-argument-parser's conventions, written by hand since gen depends on no package).
struct CommandSpec {
    var name: String
    var abstract: String
    var discussion: String = ""
    var arguments: [ArgumentSpec] = []
    var options: [OptionSpec]

    var usage: String {
        var parts = ["gen", name]
        for a in arguments { parts.append(a.optional ? "[\(a.display)]" : a.display) }
        for o in options where !o.hidden {
            let s = "--\(o.name)" + (o.value.map { " <\($0)>" } ?? "")
            parts.append(o.required ? s : "[\(s)]" + (o.repeated ? " ..." : ""))
        }
        return parts.joined(separator: " ")
    }

    var help: String {
        var s = "OVERVIEW: \(abstract)\n"
        if !discussion.isEmpty { s += "\n" + discussion + "\n" }
        s += "\nUSAGE: \(usage)\n"
        if !arguments.isEmpty {
            s += "\nARGUMENTS:\n"
            for a in arguments { s += Self.row("<\(a.name)>", a.help) }
        }
        s += "\nOPTIONS:\n"
        for o in options where !o.hidden {
            var text = o.help
            if let d = o.defaultValue { text += " (default: \(d))" }
            if !o.aliases.isEmpty { text += " (also: " + o.aliases.map { "--" + $0 }.joined(separator: ", ") + ")" }
            s += Self.row(o.display, text)
        }
        s += Self.row("-h, --help", "Show help information.")
        return s
    }

    static func row(_ left: String, _ text: String) -> String {
        let pad = 26
        let head = "  " + left
        if head.count + 2 > pad { return head + "\n" + String(repeating: " ", count: pad) + text + "\n" }
        return head + String(repeating: " ", count: pad - head.count) + text + "\n"
    }

    func option(named name: String) -> OptionSpec? { options.first { $0.name == name } }
}

/// Asked for help: print it and exit 0.
struct HelpRequest: Error {
    var command: CommandSpec
}

/// The checked command line of one command: every option known, every required option and
/// positional present; values are turned into types by the accessors, which throw a usage
/// error naming the flag.
struct ParsedArguments {
    let spec: CommandSpec
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    private(set) var positionals: [String] = []

    init(_ args: [String], spec: CommandSpec) throws {
        self.spec = spec
        var i = 0
        var onlyPositionals = false
        while i < args.count {
            let a = args[i]
            i += 1
            if onlyPositionals || a == "-" || !a.hasPrefix("-") {
                positionals.append(a)
                continue
            }
            if a == "--" { onlyPositionals = true; continue }
            if a == "-h" || a == "--help" { throw HelpRequest(command: spec) }
            var name: String
            var inline: String?
            let o: OptionSpec
            if a.hasPrefix("--") {
                name = String(a.dropFirst(2))
                if let eq = name.firstIndex(of: "=") {
                    inline = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                guard let found = spec.options.first(where: { $0.name == name || $0.aliases.contains(name) }) else {
                    throw GenError.usage("Unknown option '--\(name)'" + Self.hint("--" + name, spec))
                }
                o = found
            } else {
                guard a.count == 2, let found = spec.options.first(where: { $0.short == a.last }) else {
                    throw GenError.usage("Unknown option '\(a)'" + Self.hint(a, spec))
                }
                o = found
            }
            name = o.name
            if o.value == nil {
                if inline != nil { throw GenError.usage("Option '--\(name)' takes no value") }
                flags.insert(name)
                continue
            }
            let v: String
            if let inline { v = inline } else {
                guard i < args.count else { throw GenError.usage("Missing value for '--\(name) <\(o.value!)>'") }
                v = args[i]
                i += 1
            }
            if !o.repeated, values[name] != nil { throw GenError.usage("Option '--\(name)' given more than once") }
            values[name, default: []].append(v)
        }
        for o in spec.options where o.required && values[o.name] == nil {
            throw GenError.usage("Missing expected argument '--\(o.name) <\(o.value ?? "value")>'")
        }
        var at = 0
        for a in spec.arguments {
            if at >= positionals.count {
                if a.optional { break }
                throw GenError.usage("Missing expected argument '\(a.display)'")
            }
            at += a.repeated ? positionals.count - at : 1
        }
        if at < positionals.count { throw GenError.usage("Unexpected argument '\(positionals[at])'") }
    }

    static func hint(_ given: String, _ spec: CommandSpec) -> String {
        let names = spec.options.flatMap { o in (["--" + o.name] + o.aliases.map { "--" + $0 }) } + ["--help"]
        var best: (String, Int)?
        for n in names {
            let d = editDistance(given, n)
            if d <= max(2, given.count / 3), best == nil || d < best!.1 { best = (n, d) }
        }
        if let b = best { return "\nDid you mean '\(b.0)'?" }
        if let p = names.first(where: { $0.hasPrefix(given) && given.count > 3 }) { return "\nDid you mean '\(p)'?" }
        return ""
    }

    func has(_ name: String) -> Bool { flags.contains(name) || values[name] != nil }

    func string(_ name: String) -> String? {
        values[name]?.last ?? spec.option(named: name)?.defaultValue
    }

    func strings(_ name: String) -> [String] { values[name] ?? [] }

    private func invalid(_ name: String, _ s: String, _ why: String) -> GenError {
        GenError.usage("The value '\(s)' is invalid for '--\(name) <\(spec.option(named: name)?.value ?? "value")>': \(why)")
    }

    func int(_ name: String, min lo: Int? = nil, max hi: Int? = nil) throws -> Int {
        let s = string(name)!
        guard let v = Int(s) else { throw invalid(name, s, "not an integer") }
        if let lo, v < lo { throw invalid(name, s, "must be at least \(lo)") }
        if let hi, v > hi { throw invalid(name, s, "must be at most \(hi)") }
        return v
    }

    func float(_ name: String, min lo: Float? = nil, max hi: Float? = nil) throws -> Float {
        let s = string(name)!
        guard let v = Float(s), v.isFinite else { throw invalid(name, s, "not a number") }
        if let lo, v < lo { throw invalid(name, s, "must be at least \(lo)") }
        if let hi, v > hi { throw invalid(name, s, "must be at most \(hi)") }
        return v
    }

    /// One of `choices`.
    func choice(_ name: String, _ choices: [String]) throws -> String {
        let s = string(name)!
        guard choices.contains(s) else { throw invalid(name, s, choices.joined(separator: " or ")) }
        return s
    }
}

func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a), y = Array(b)
    if x.isEmpty { return y.count }
    if y.isEmpty { return x.count }
    var prev = Array(0...y.count)
    for i in 1...x.count {
        var cur = [i] + Array(repeating: 0, count: y.count)
        for j in 1...y.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[y.count]
}
