import FoundationEssentials
import Glibc
import GenKit

let genVersion = "0.1.0"

/// A subcommand: its interface and what runs it, from options already checked against it.
struct Command {
    var spec: CommandSpec
    /// Whether the command multiplies matrices: OpenBLAS is loaded before it runs (so that a
    /// missing library is one clear error); the others start without it (`sample` and `review`
    /// load it themselves when their prompts need it).
    var matrices = true
    var run: (ParsedArguments) throws -> Int32
}

let commands: [Command] = [
    Command(spec: TrainOptions.trainSpec) { try TrainOptions($0, finetune: false).run() },
    Command(spec: TrainOptions.finetuneSpec) { try TrainOptions($0, finetune: true).run() },
    Command(spec: SampleOptions.spec, matrices: false) { try SampleOptions($0).run() },
    Command(spec: EvalOptions.spec) { try EvalOptions($0).run() },
    Command(spec: InfoOptions.spec, matrices: false) { try InfoOptions($0).run() },
    Command(spec: ExportOptions.spec) { try ExportOptions($0).run() },
    Command(spec: MergeOptions.spec) { try MergeOptions($0).run() },
    Command(spec: ReviewOptions.spec, matrices: false) { try ReviewOptions($0).run() },
    Command(spec: PreferOptions.spec) { try PreferOptions($0).run() },
    Command(spec: BenchOptions.spec) { try BenchOptions($0).run() },
    Command(spec: TokenizerTrainOptions.spec, matrices: false) { try TokenizerTrainOptions($0).run() },
    Command(spec: TokenizeOptions.spec, matrices: false) { try TokenizeOptions($0).run() },
    Command(spec: TokenizeOptions.detokenizeSpec, matrices: false) { try TokenizeOptions.runDetokenize($0) },
]

/// Commands whose names have two words (`tokenizer train`) are grouped under the first.
let groups: [String: String] = ["tokenizer": "Train byte-level BPE tokenizers."]

func groupHelp(_ group: String) -> String {
    let subs = commands.filter { $0.spec.name.hasPrefix(group + " ") }
    return """
    OVERVIEW: \(groups[group]!)

    USAGE: gen \(group) <subcommand>

    OPTIONS:
      -h, --help              Show help information.

    SUBCOMMANDS:
    \(subs.map { CommandSpec.row(String($0.spec.name.dropFirst(group.count + 1)), $0.spec.abstract) }.joined())
      See 'gen help \(group) <subcommand>' for detailed help.

    """
}

let overview = """
OVERVIEW: Train, finetune and sample small GPT-2 models on your own text, on the CPU.

USAGE: gen <subcommand>

OPTIONS:
  --version               Show the version.
  -h, --help              Show help information.

SUBCOMMANDS:
\(commands.filter { !$0.spec.name.contains(" ") }.map { CommandSpec.row($0.spec.name, $0.spec.abstract) }.joined())\(groups.keys.sorted().map { CommandSpec.row($0, groups[$0]!) }.joined())\(CommandSpec.row("help", "Show help for a subcommand."))
  See 'gen help <subcommand>' for detailed help.

"""

/// The command named by the first words of `argv`, and the words after its name.
func findCommand(_ argv: [String]) throws -> (Command, [String])? {
    guard let first = argv.first else { return nil }
    if groups[first] != nil {
        guard argv.count > 1, !argv[1].hasPrefix("-") else { return nil }
        guard let c = commands.first(where: { $0.spec.name == first + " " + argv[1] }) else {
            throw GenError.usage("Unknown subcommand '\(first) \(argv[1])'")
        }
        return (c, Array(argv.dropFirst(2)))
    }
    guard let c = commands.first(where: { $0.spec.name == first }) else {
        throw GenError.usage((first.hasPrefix("-") ? "Unknown option '\(first)'" : "Unknown subcommand '\(first)'") + subcommandHint(first))
    }
    return (c, Array(argv.dropFirst()))
}

func subcommandHint(_ given: String) -> String {
    let names = commands.map { $0.spec.name }.filter { !$0.contains(" ") } + groups.keys + ["help"]
    if let best = names.min(by: { editDistance(given, $0) < editDistance(given, $1) }), editDistance(given, best) <= 2 {
        return "\nDid you mean '\(best)'?"
    }
    return ""
}

/// Runs the command line; every error becomes its message and an exit code here: 64 for a
/// usage problem (with the usage line), 1 for anything else.
func run(_ argv: [String]) -> Int32 {
    var current: CommandSpec?
    do {
        switch argv.first {
        case nil, "-h", "--help":
            try Output.write(overview)
            return 0
        case "--version":
            try Output.line(genVersion)
            return 0
        case "help":
            let rest = Array(argv.dropFirst())
            if rest.isEmpty { try Output.write(overview); return 0 }
            if let group = rest.first, groups[group] != nil, rest.count == 1 { try Output.write(groupHelp(group)); return 0 }
            guard let (c, _) = try findCommand(rest) else { try Output.write(overview); return 0 }
            try Output.write(c.spec.help)
            return 0
        default:
            if let group = argv.first, groups[group] != nil, argv.count == 1 || argv[1].hasPrefix("-") {
                if argv.count > 1 && (argv[1] == "-h" || argv[1] == "--help") { try Output.write(groupHelp(group)); return 0 }
                throw GenError.usage("Missing subcommand: 'gen \(group) <subcommand>'\nSee 'gen help \(group)'.")
            }
            guard let (c, rest) = try findCommand(argv) else { try Output.write(overview); return 0 }
            current = c.spec
            let parsed = try ParsedArguments(rest, spec: c.spec)
            if c.matrices { try loadMatrixKernel() }
            let status = try c.run(parsed)
            try Output.finish()
            return status
        }
    } catch let h as HelpRequest {
        do { try Output.write(h.command.help) } catch { return fail(error, command: nil) }
        return 0
    } catch {
        return fail(error, command: current)
    }
}

/// Loads OpenBLAS for a command that multiplies matrices, printing the warning when its kernel
/// is weaker than the CPU runs.
/// - Throws: `GenError` when the library cannot be loaded.
func loadMatrixKernel() throws {
    if let warning = try Machine.prepareMatrixKernel() { note(warning) }
}

/// Prints `error` as one line (with the usage line for a usage problem) and returns the exit code.
func fail(_ error: Error, command: CommandSpec?) -> Int32 {
    guard let e = error as? GenError else {
        note("Error: \(describe(error))")
        return 1
    }
    let message = e.setting.map { "--\($0): \(e.message)" } ?? e.message
    guard e.kind == .usage else {
        note("Error: \(message)")
        return 1
    }
    var s = "Error: \(message)\n"
    if let c = command {
        s += "Usage: \(c.usage)\n  See 'gen help \(c.name)' for more information.\n"
    } else {
        s += "Usage: gen <subcommand>\n  See 'gen --help' for more information.\n"
    }
    fputs(s, stderr)
    return 64
}

setvbuf(stdout, nil, _IOFBF, 1 << 16)
// A file-size limit (ulimit -f) makes a write fail with EFBIG, reported like a full disk,
// instead of killing gen.
signal(SIGXFSZ, SIG_IGN)
exit(run(Array(CommandLine.arguments.dropFirst())))
