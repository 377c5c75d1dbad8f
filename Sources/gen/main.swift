import Foundation
import GenKit

let genVersion = "0.1.0"

let commands: [(CommandSpec, ([String]) throws -> Int32)] = [
    (trainSpec, { try runTrain($0, finetune: false) }),
    (finetuneSpec, { try runTrain($0, finetune: true) }),
    (sampleSpec, runSample),
    (evalSpec, runEval),
    (infoSpec, runInfo),
    (benchSpec, runBench),
    (tokenizerTrainSpec, runTokenizerTrain),
    (tokenizeSpec, runTokenize),
    (detokenizeSpec, runDetokenize),
]

let overview = """
OVERVIEW: Train, finetune and sample small GPT-2 models on your own text, on the CPU.

USAGE: gen <subcommand>

OPTIONS:
  --version               Show the version.
  -h, --help              Show help information.

SUBCOMMANDS:
\(commands.map { CommandSpec.row($0.0.name, $0.0.abstract) }.joined())\(CommandSpec.row("help", "Show help for a subcommand."))
  See 'gen help <subcommand>' for detailed help.
"""

func usageFailure(_ e: UsageError) -> Int32 {
    var s = "Error: \(e.message)\n"
    if let c = e.command {
        s += "Usage: \(c.usage)\n  See 'gen help \(c.name)' for more information.\n"
    } else {
        s += "Usage: gen <subcommand>\n  See 'gen --help' for more information.\n"
    }
    fputs(s, stderr)
    return 64
}

func run(_ argv: [String]) -> Int32 {
    guard let first = argv.first else { print(overview); return 0 }
    do {
        switch first {
        case "-h", "--help":
            print(overview)
            return 0
        case "--version":
            print(genVersion)
            return 0
        case "help":
            guard argv.count > 1 else { print(overview); return 0 }
            let name = argv[1] == "tokenizer" ? "tokenizer train" : argv[1]
            guard let c = commands.first(where: { $0.0.name == name }) else {
                throw UsageError(message: "Unknown subcommand '\(argv[1])'" + subcommandHint(argv[1]), command: nil)
            }
            print(c.0.help, terminator: "")
            return 0
        case "tokenizer" where argv.count > 1 && argv[1] == "train":
            return try runTokenizerTrain(Array(argv.dropFirst(2)))
        case "tokenizer":
            throw UsageError(message: "Missing subcommand: 'gen tokenizer train'", command: tokenizerTrainSpec)
        default:
            guard let c = commands.first(where: { $0.0.name == first }) else {
                throw UsageError(message: (first.hasPrefix("-") ? "Unknown option '\(first)'" : "Unknown subcommand '\(first)'") + subcommandHint(first), command: nil)
            }
            return try c.1(Array(argv.dropFirst()))
        }
    } catch let e as UsageError {
        return usageFailure(e)
    } catch let h as HelpRequest {
        print(h.command.help, terminator: "")
        return 0
    } catch let e as GenError {
        fputs("Error: \(e.description)\n", stderr)
        return 1
    } catch {
        fputs("Error: \(error)\n", stderr)
        return 1
    }
}

func subcommandHint(_ given: String) -> String {
    let names = commands.map { $0.0.name } + ["help"]
    if let best = names.min(by: { editDistance(given, $0) < editDistance(given, $1) }), editDistance(given, best) <= 2 {
        return "\nDid you mean '\(best)'?"
    }
    return ""
}

if let warning = BLAS.ensureFastKernel() { fputs(warning + "\n", stderr) }
setvbuf(stdout, nil, _IOFBF, 1 << 16)
let status = run(Array(CommandLine.arguments.dropFirst()))
fflush(stdout)
exit(status)
