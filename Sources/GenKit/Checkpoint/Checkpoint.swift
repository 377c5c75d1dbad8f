import GenKernels
import Foundation

/// gen's model file: a safetensors file with GPT-2's tensor names and shapes and metadata
/// `format` = gen, `format_version` = 1, `config`, `tokenizer` and facts about its training.
public struct Checkpoint {
    public static let formatVersion = "1"

    public var model: GPTModel
    public var tokenizer: Tokenizer
    /// All metadata (including keys this gen does not know).
    public var metadata: [String: String]

    public init(model: GPTModel, tokenizer: Tokenizer, metadata: [String: String] = [:]) {
        self.model = model
        self.tokenizer = tokenizer
        self.metadata = metadata
    }

    /// Loads and checks a model file.
    /// - Throws: `GenError` saying what is wrong: not safetensors, truncated, wrong version,
    ///   missing tensor, wrong shape.
    public static func load(_ path: String) throws -> Checkpoint {
        let file: SafeTensorsFile
        file = try SafeTensorsFile(path: path)
        let meta = file.metadata
        if let f = meta["format"], f != "gen" { throw GenError("\(path): format is \"\(f)\", not a gen model") }
        guard let version = meta["format_version"] else {
            throw GenError("\(path): not a gen model (no format_version in its metadata)")
        }
        guard version == formatVersion else {
            throw GenError("\(path): format_version \(version) is not supported (this gen reads version \(formatVersion))")
        }
        guard let configJSON = meta["config"],
              let config = try? JSONDecoder().decode(GPTConfig.self, from: Data(configJSON.utf8)) else {
            throw GenError("\(path): the config metadata is missing or malformed")
        }
        do { try config.validate() } catch let e as GenError { throw GenError("\(path): bad config: \(e.message)") }
        guard let tokJSON = meta["tokenizer"] else { throw GenError("\(path): no tokenizer in its metadata") }
        let tokenizer: Tokenizer
        do { tokenizer = try makeTokenizer(json: tokJSON) } catch let e as GenError { throw GenError("\(path): \(e.description)") }
        guard tokenizer.vocabSize == config.vocabSize else {
            throw GenError("\(path): the tokenizer has \(tokenizer.vocabSize) tokens but the model \(config.vocabSize)")
        }
        let model = GPTModel(config: config)
        for t in model.layout.tensors {
            guard let e = file.entries[t.name] else { throw GenError("\(path): missing tensor \(t.name)") }
            guard e.dtype == "F32" else { throw GenError("\(path): tensor \(t.name) is \(e.dtype), expected F32") }
            guard e.shape == t.shape else {
                throw GenError("\(path): tensor \(t.name) has shape \(e.shape), expected \(t.shape)")
            }
            try file.copyFloats(t.name, into: model.parameters.pointer + t.offset, count: t.count)
        }
        return Checkpoint(model: model, tokenizer: tokenizer, metadata: meta)
    }

    /// Writes the model file atomically.
    public func save(_ path: String) throws {
        var meta = metadata
        meta["format"] = "gen"
        meta["format_version"] = Self.formatVersion
        meta["config"] = String(decoding: try JSONEncoder.sorted.encode(model.config), as: UTF8.self)
        meta["tokenizer"] = tokenizer.json
        let base = UnsafeRawPointer(model.parameters.pointer)
        let items = model.layout.tensors.map {
            SafeTensorsWriter.Item(name: $0.name, shape: $0.shape,
                                   bytes: UnsafeRawBufferPointer(start: base + $0.offset * 4, count: $0.count * 4))
        }
        try SafeTensorsWriter.write(items, metadata: meta, to: path)
    }
}

/// The optimizer state written beside a model (`FILE.state`) so that `--resume` continues
/// exactly: Adam moments, step, generator states and the run's settings.
public struct TrainingState {
    public var step: Int
    public var dataRandom: Random
    public var dropoutRandom: Random
    public var settings: TrainingSettings
    /// Anything else the run wants back (seed, corpus, threads).
    public var extra: [String: String]

    public init(step: Int, dataRandom: Random, dropoutRandom: Random, settings: TrainingSettings, extra: [String: String]) {
        self.step = step
        self.dataRandom = dataRandom
        self.dropoutRandom = dropoutRandom
        self.settings = settings
        self.extra = extra
    }

    public static func save(_ s: TrainingState, trainer: Trainer, to path: String) throws {
        var meta = s.extra
        meta["format"] = "gen-state"
        meta["format_version"] = Checkpoint.formatVersion
        meta["step"] = String(s.step)
        meta["data_rng"] = s.dataRandom.words.map(String.init).joined(separator: " ")
        meta["dropout_rng"] = s.dropoutRandom.words.map(String.init).joined(separator: " ")
        meta["settings"] = String(decoding: try JSONEncoder.sorted.encode(s.settings), as: UTF8.self)
        let n = trainer.m.count
        let items = [
            SafeTensorsWriter.Item(name: "adam.m", shape: [n], bytes: UnsafeRawBufferPointer(start: trainer.m.pointer, count: n * 4)),
            SafeTensorsWriter.Item(name: "adam.v", shape: [n], bytes: UnsafeRawBufferPointer(start: trainer.v.pointer, count: n * 4)),
        ]
        try SafeTensorsWriter.write(items, metadata: meta, to: path)
    }

    /// Reads a state file into `trainer`'s moments and returns the rest.
    public static func load(_ path: String, into trainer: Trainer) throws -> TrainingState {
        let file: SafeTensorsFile
        file = try SafeTensorsFile(path: path)
        let meta = file.metadata
        guard meta["format"] == "gen-state", meta["format_version"] == Checkpoint.formatVersion,
              let step = meta["step"].flatMap(Int.init),
              let d = meta["data_rng"]?.split(separator: " ").compactMap({ UInt64($0) }), d.count == 4,
              let r = meta["dropout_rng"]?.split(separator: " ").compactMap({ UInt64($0) }), r.count == 4,
              let sj = meta["settings"], let settings = try? JSONDecoder().decode(TrainingSettings.self, from: Data(sj.utf8)) else {
            throw GenError("\(path): not a gen training state file, or a damaged one")
        }
        do {
            try file.copyFloats("adam.m", into: trainer.m.pointer, count: trainer.m.count)
            try file.copyFloats("adam.v", into: trainer.v.pointer, count: trainer.v.count)
        } catch let e as GenError {
            throw GenError("\(path): \(e.description) (does it belong to this model?)")
        }
        return TrainingState(step: step, dataRandom: Random(state: d), dropoutRandom: Random(state: r),
                             settings: settings, extra: meta)
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
