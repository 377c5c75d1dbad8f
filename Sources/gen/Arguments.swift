import Foundation
import GenKit

/// One option of a command: `--name <value>` or a flag `--name`.
struct OptionSpec {
    var name: String
    var value: String?          // placeholder, nil for a flag
    var help: String
    var defaultValue: String?
    var repeated = false
    var hidden = false
}

/// A command's interface, from which both parsing and help are made (swift-argument-parser's
/// conventions, written by hand since gen depends on no package).
struct CommandSpec {
    var name: String
    var abstract: String
    var discussion: String = ""
    var arguments: [(name: String, help: String, optional: Bool, repeated: Bool)] = []
    var options: [OptionSpec]

    var usage: String {
        var parts = ["gen", name]
        for a in arguments {
            let s = "<\(a.name)>" + (a.repeated ? " ..." : "")
            parts.append(a.optional ? "[\(s)]" : s)
        }
        for o in options where !o.hidden {
            if o.defaultValue == nil && o.value != nil && o.name == "from" { parts.append("--from <\(o.value!)>"); continue }
            parts.append(o.value.map { "[--\(o.name) <\($0)>]" + (o.repeated ? " ..." : "") } ?? "[--\(o.name)]")
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
            let left = "--\(o.name)" + (o.value.map { " <\($0)>" } ?? "")
            var text = o.help
            if let d = o.defaultValue { text += " (default: \(d))" }
            s += Self.row(left, text)
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
}

/// A mistake in how gen was called: exit 64 with the message, the usage line and a hint.
struct UsageError: Error {
    var message: String
    var command: CommandSpec?
}

/// Asked for help: print it and exit 0.
struct HelpRequest: Error {
    var command: CommandSpec
}

/// The parsed command line of one command.
struct ParsedArguments {
    let spec: CommandSpec
    var values: [String: [String]] = [:]
    var flags: Set<String> = []
    var positionals: [String] = []

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
            guard a.hasPrefix("--") else {
                throw UsageError(message: "Unknown option '\(a)'" + Self.hint(a, spec), command: spec)
            }
            var name = String(a.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let o = spec.options.first(where: { $0.name == name }) else {
                throw UsageError(message: "Unknown option '--\(name)'" + Self.hint("--" + name, spec), command: spec)
            }
            if o.value == nil {
                if inline != nil { throw UsageError(message: "Option '--\(name)' takes no value", command: spec) }
                flags.insert(name)
                continue
            }
            let v: String
            if let inline { v = inline } else {
                guard i < args.count else {
                    throw UsageError(message: "Missing value for '--\(name) <\(o.value!)>'", command: spec)
                }
                v = args[i]
                i += 1
            }
            if !o.repeated, values[name] != nil {
                throw UsageError(message: "Option '--\(name)' given more than once", command: spec)
            }
            values[name, default: []].append(v)
        }
    }

    static func hint(_ given: String, _ spec: CommandSpec) -> String {
        let names = spec.options.map { "--" + $0.name } + ["--help"]
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
        values[name]?.last ?? spec.options.first(where: { $0.name == name })?.defaultValue
    }

    func strings(_ name: String) -> [String] { values[name] ?? [] }

    func int(_ name: String, min lo: Int? = nil) throws -> Int {
        let s = string(name)!
        guard let v = Int(s) else {
            throw UsageError(message: "The value '\(s)' is invalid for '--\(name) <\(optionValue(name))>': not an integer", command: spec)
        }
        if let lo, v < lo {
            throw UsageError(message: "The value '\(s)' is invalid for '--\(name) <\(optionValue(name))>': must be at least \(lo)", command: spec)
        }
        return v
    }

    func float(_ name: String, min lo: Float? = nil, max hi: Float? = nil) throws -> Float {
        let s = string(name)!
        guard let v = Float(s), v.isFinite else {
            throw UsageError(message: "The value '\(s)' is invalid for '--\(name) <\(optionValue(name))>': not a number", command: spec)
        }
        if let lo, v < lo {
            throw UsageError(message: "The value '\(s)' is invalid for '--\(name) <\(optionValue(name))>': must be at least \(lo)", command: spec)
        }
        if let hi, v > hi {
            throw UsageError(message: "The value '\(s)' is invalid for '--\(name) <\(optionValue(name))>': must be at most \(hi)", command: spec)
        }
        return v
    }

    func optionValue(_ name: String) -> String { spec.options.first { $0.name == name }?.value ?? "value" }
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
