import Foundation
import GenKit

let infoSpec = CommandSpec(
    name: "info",
    abstract: "Describe a model file: shape, tokenizer, training facts.",
    arguments: [("file", "A model file written by gen.", false, false)],
    options: [OptionSpec(name: "json", value: nil, help: "Print the description as one JSON object.", defaultValue: nil)])

func runInfo(_ args: [String]) throws -> Int32 {
    let a = try ParsedArguments(args, spec: infoSpec)
    guard a.positionals.count == 1 else {
        throw UsageError(message: a.positionals.isEmpty ? "Missing expected argument '<file>'" : "Unexpected argument '\(a.positionals[1])'", command: a.spec)
    }
    let path = a.positionals[0]
    let ck = try Checkpoint.load(path)
    let c = ck.model.config
    let facts = ["step", "train_loss", "val_loss", "corpus", "date", "seed", "finetuned_from", "generator"]
    if a.has("json") {
        var fields = [
            "\"file\":\(jsonString(path))",
            "\"config\":\(ck.metadata["config"]!)",
            "\"parameters\":\(ck.model.parameterCount)",
            "\"tokenizer\":{\"type\":\(jsonString(ck.tokenizer.kind)),\"vocab_size\":\(ck.tokenizer.vocabSize)}",
        ]
        for k in facts { if let v = ck.metadata[k] { fields.append("\(jsonString(k)):\(jsonString(v))") } }
        print("{" + fields.joined(separator: ",") + "}")
    } else {
        print("\(path): gen model, format version \(ck.metadata["format_version"] ?? "?")")
        print("  shape       \(c.nLayer) layers, \(c.nHead) heads, \(c.nEmbd) channels, context \(c.blockSize)")
        print("  parameters  \(ck.model.parameterCount)")
        print("  tokenizer   \(ck.tokenizer.kind), \(ck.tokenizer.vocabSize) tokens")
        for k in facts { if let v = ck.metadata[k] { print("  " + k.replacingOccurrences(of: "_", with: " ").padding(toLength: 12, withPad: " ", startingAt: 0) + v) } }
    }
    return 0
}
