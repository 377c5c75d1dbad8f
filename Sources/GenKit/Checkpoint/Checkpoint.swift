import GenKernels
import FoundationEssentials
import Glibc

/// A model with its tokenizer and metadata, as gen reads and writes it.
///
/// gen's model file is a safetensors file with GPT-2's tensor names and shapes. Its metadata
/// says `format` = `pt` (as transformers' own files do, so that Hugging Face loads it) and
/// carries gen's identity under keys of its own: `gen_format_version` = 2, `config`,
/// `tokenizer` and facts about its training. Files written before (`format` = `gen`,
/// `format_version` = 1) are read as before. Hugging Face GPT-2 models (a folder, or a
/// safetensors file with its config.json beside it) are read too (`HuggingFaceGPT2`).
public struct Checkpoint {
    /// The version of gen's own keys this gen writes.
    public static let formatVersion = "2"
    /// The state file's version (unchanged since version 1 of the model file).
    static let stateFormatVersion = "1"

    public var model: GPTModel
    public var tokenizer: Tokenizer
    /// All metadata (including keys this gen does not know).
    public var metadata: [String: String]

    public init(model: GPTModel, tokenizer: Tokenizer, metadata: [String: String] = [:]) {
        self.model = model
        self.tokenizer = tokenizer
        self.metadata = metadata
    }

    /// True for a Hugging Face model rather than a file gen wrote.
    public var isHuggingFace: Bool { metadata["gen_source"] == "huggingface" }

    /// Loads and checks a model: a gen model file, a Hugging Face GPT-2 folder, or a Hugging
    /// Face safetensors file with its config.json beside it.
    /// - Throws: `GenError` saying what is wrong: not safetensors, truncated, wrong version,
    ///   missing tensor, wrong shape, a GPT-2 variant gen does not compute.
    /// - Parameter options: what the model is loaded for (`LoadOptions`); none for training.
    public static func load(_ path: String, _ options: LoadOptions = []) throws -> Checkpoint {
        var isDir = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir {
            return try HuggingFaceGPT2.load(folder: path, options)
        }
        let file = try SafeTensorsFile(path: path)
        let meta = file.metadata
        let gen = meta["gen_format_version"] ?? (meta["format"] == "gen" ? meta["format_version"] : nil)
        guard let version = gen else {
            if meta["format"] == nil || meta["format"] == "pt" {
                return try HuggingFaceGPT2.load(file: file, path: path, options)
            }
            throw GenError("\(path): format is \"\(meta["format"]!)\", not a gen or PyTorch safetensors model")
        }
        guard version == "1" || version == formatVersion else {
            throw GenError("\(path): gen format version \(version) is not supported (this gen reads versions 1 and \(formatVersion))")
        }
        guard let configJSON = meta["config"],
              let config = try? JSONDecoder().decode(GPTConfig.self, from: Data(configJSON.utf8)) else {
            throw GenError("\(path): the config metadata is missing or malformed")
        }
        guard let tokJSON = meta["tokenizer"] else { throw GenError("\(path): no tokenizer in its metadata") }
        let tokenizer: Tokenizer
        do { tokenizer = try makeTokenizer(json: tokJSON) } catch let e as GenError { throw GenError("\(path): \(e.description)") }
        let model = try loadWeights(config: config, tokenizer: tokenizer, from: [file], name: path, options) { $0 }
        return Checkpoint(model: model, tokenizer: tokenizer, metadata: meta)
    }

    /// A model of `config` with every tensor read from `files` (converted to F32), named by
    /// `key` (GPT-2's name -> the name in the files, or nil when absent), as `options` say: with
    /// `.decoding` (and a model small enough), the projections are read through a scratch
    /// tensor and stored transposed; with `.int8`, rounded to 8 bits (with `.decoding`, the
    /// projections straight from the file into their 8 bits); with `.headerOnly`, every tensor
    /// is checked but none is read (the weights stay zero).
    static func loadWeights(config: GPTConfig, tokenizer: Tokenizer, from files: [SafeTensorsFile], name: String,
                            _ options: LoadOptions, key: (String) -> String?) throws -> GPTModel {
        let decoding = options.contains(.decoding), int8 = options.contains(.int8), readWeights = !options.contains(.headerOnly)
        do { try config.validate() } catch let e as GenError { throw GenError("\(name): bad config: \(e.message)") }
        guard tokenizer.vocabSize <= config.vocabSize else {
            throw GenError("\(name): the tokenizer has \(tokenizer.vocabSize) tokens but the model \(config.vocabSize)")
        }
        if readWeights { try Machine.checkFits(config.parameterEstimate * 4, "loading \(name)") }
        // Its pages are only faulted in when written: a model whose weights are not read costs no memory.
        let model = GPTModel(config: config)
        // Only sampled from in 8 bits: the projections and embeddings rounded from the file, never stored in fp32.
        let rounding = decoding && int8 && readWeights ? Int8Weights(config: config, fp32Copy: false) : nil
        let transposing = decoding && readWeights && rounding == nil && GPTModel.arrangesForDecoding(config)
        let scratch = transposing || rounding != nil ? FloatBuffer(count: config.largestProjection) : nil
        // A larger model only sampled from reads its token embeddings in place when it can
        // (in 8 bits alone, they are rounded from the file instead).
        let inPlace = decoding && readWeights && !transposing && rounding == nil
        let mapped = inPlace ? try projectionsToReadInPlace(model, files, options, key: key) : nil
        for t in model.layout.tensors {
            guard let k = key(t.name), let file = files.first(where: { $0.entries[k] != nil }), let e = file.entries[k] else {
                throw GenError("\(name): missing tensor \(t.name)")
            }
            guard e.shape == t.shape else {
                throw GenError("\(name): tensor \(k) has shape \(e.shape), expected \(t.shape)")
            }
            let at = model.parameters.pointer + t.offset
            do {
                if !readWeights {
                    try file.checkFloats(k, count: t.count)
                } else if let rounding, t.name == "wte.weight" {
                    // Rounded where they lie in the file (F32), else converted in the buffer first.
                    var w = try file.floatsInPlace(k, count: t.count).map { UnsafeMutablePointer(mutating: $0) }
                    if w == nil { try file.copyFloats(k, into: at, count: t.count); w = at }
                    rounding.roundEmbeddings(w!, C: config.nEmbd, V: config.vocabSize, writingBack: false)
                } else if inPlace && t.name == "wte.weight", let p = try file.floatsInPlace(k, count: t.count) {
                    model.readEmbeddingsInPlace(p, file: file.bytes)
                } else if let mapped, let i = t.projection, mapped.inFile[4 * model.layout.layer(of: t) + i] {
                    try file.checkFloats(k, count: t.count)   // read where it lies (below)
                } else if let rounding, let scratch, let rows = rounding.dense, let i = t.projection {
                    // Transposed into the buffer where batched passes will rebuild projections,
                    // and rounded from there by rows (the bytes rounding by columns gives).
                    let (K, N) = (t.shape[0], t.shape[1])
                    try file.copyFloats(k, into: rows.pointer, count: t.count, transposing: (K, N), scratch: scratch.pointer)
                    rounding.round(layer: model.layout.layer(of: t), i, rowsOf: rows.pointer, K: K, N: N)
                } else if let scratch, t.isProjection {
                    try file.copyFloats(k, into: at, count: t.count, transposing: (t.shape[0], t.shape[1]), scratch: scratch.pointer)
                } else {
                    try file.copyFloats(k, into: at, count: t.count)
                }
            } catch let e as GenError {
                throw GenError("\(name): \(e.message)")
            }
        }
        if transposing { model.markArrangedForDecoding() }
        if let mapped { model.readProjectionsInPlace(mapped.weights, file: mapped.file) }
        if let rounding {
            model.useInt8(rounding)
        } else if int8 && readWeights {
            model.roundToInt8()
        }
        return model
    }

    /// Where decoding is to read the four projection weights of every block of `model` (in
    /// `readProjectionsInPlace`'s order), and which of them lie in the file (`inFile`: the
    /// others are the buffer's, copied there as before): in place each that is F32 on a 64-byte
    /// boundary (rows read across cache lines decoded 124M's shape at 0.76x) and that the kernel
    /// maps whole in 2 MB pages (`Memory.mappedInHugePages`), where decoding reads it as fast as
    /// from the buffer's huge pages (from 4 KB pages it ran at 0.94-0.97x). nil when none is,
    /// the projections are in more than one file, or the kernel cannot say.
    /// `.projectionsInPlace` and `.projectionsCopied` (tests) decide without looking.
    static func projectionsToReadInPlace(_ model: GPTModel, _ files: [SafeTensorsFile], _ options: LoadOptions,
                                         key: (String) -> String?) throws -> (weights: [UnsafePointer<Float>], inFile: [Bool], file: Data)? {
        if options.contains(.projectionsCopied) { return nil }
        var weights = [UnsafePointer<Float>](repeating: model.parameters.pointer, count: 4 * model.config.nLayer)
        var inFile = [Bool](repeating: false, count: weights.count)
        var candidates: [(index: Int, range: UnsafeRawBufferPointer)] = []
        var source: SafeTensorsFile? = nil
        for t in model.layout.tensors {
            guard let i = t.projection else { continue }
            guard let k = key(t.name), let file = files.first(where: { $0.entries[k] != nil }) else { return nil }
            if source == nil { source = file }
            guard file.baseAddress == source!.baseAddress else { return nil }
            let index = 4 * model.layout.layer(of: t) + i
            weights[index] = UnsafePointer(model.parameters.pointer + t.offset)
            if let p = try file.floatsInPlace(k, count: t.count), Int(bitPattern: p) % 64 == 0 {
                candidates.append((index, UnsafeRawBufferPointer(start: p, count: t.count * 4)))
            }
        }
        guard let source, !candidates.isEmpty else { return nil }
        let huge = options.contains(.projectionsInPlace) ? candidates.map { _ in true }
            : source.bytes.withUnsafeBytes { Memory.mappedInHugePages(candidates.map(\.range), mapping: $0) }
        guard let huge, huge.contains(true) else { return nil }
        for (c, inPlace) in zip(candidates, huge) where inPlace {
            weights[c.index] = c.range.baseAddress!.assumingMemoryBound(to: Float.self)
            inFile[c.index] = true
        }
        return (weights, inFile, source.bytes)
    }

    /// Writes the model file atomically.
    public func save(_ path: String) throws {
        try prepare(path).commit()
    }

    /// Writes the model file whole under a temporary name beside `path`, for `commit`.
    func prepare(_ path: String) throws -> PendingFile {
        precondition(!model.samplingOnly, "a model loaded for sampling only is not saved")
        var meta = metadata
        meta["format"] = "pt"
        meta["format_version"] = nil
        meta["gen_format_version"] = Self.formatVersion
        meta["gen_source"] = nil
        meta["config"] = String(decoding: try JSONEncoder.sorted.encode(model.config), as: UTF8.self)
        meta["tokenizer"] = tokenizer.json
        let base = UnsafeRawPointer(model.parameters.pointer)
        let items = model.layout.tensors.map {
            SafeTensorsWriter.Item(name: $0.name, shape: $0.shape,
                                   bytes: UnsafeRawBufferPointer(start: base + $0.offset * 4, count: $0.count * 4))
        }
        return try SafeTensorsWriter.prepare(items, metadata: meta, for: path)
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

    /// Writes the state whole under a temporary name beside `path`, for `commit`.
    static func prepare(_ s: TrainingState, trainer: Trainer, for path: String) throws -> PendingFile {
        var meta = s.extra
        meta["format"] = "gen-state"
        meta["format_version"] = Checkpoint.stateFormatVersion
        meta["step"] = String(s.step)
        meta["data_rng"] = s.dataRandom.words.map(String.init).joined(separator: " ")
        meta["dropout_rng"] = s.dropoutRandom.words.map(String.init).joined(separator: " ")
        meta["settings"] = String(decoding: try JSONEncoder.sorted.encode(s.settings), as: UTF8.self)
        let n = trainer.m.count
        let items = [
            SafeTensorsWriter.Item(name: "adam.m", shape: [n], bytes: UnsafeRawBufferPointer(start: trainer.m.pointer, count: n * 4)),
            SafeTensorsWriter.Item(name: "adam.v", shape: [n], bytes: UnsafeRawBufferPointer(start: trainer.v.pointer, count: n * 4)),
        ]
        return try SafeTensorsWriter.prepare(items, metadata: meta, for: path)
    }

    /// Reads a state file into `trainer`'s moments and returns the rest.
    public static func load(_ path: String, into trainer: Trainer) throws -> TrainingState {
        let file = try SafeTensorsFile(path: path)
        let meta = file.metadata
        guard meta["format"] == "gen-state", meta["format_version"] == Checkpoint.stateFormatVersion,
              let step = meta["step"].flatMap(Int.init), step >= 0,
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

/// A model file and its optimizer state, written as a pair that resume can trust.
///
/// Each save draws a random id written into both files. The state is committed first under
/// `STATE.next`, then the model, then the state is renamed over `STATE`: whenever gen is
/// killed, the model and one of the two state files are from the same save, and `resolve`
/// finds it (or says that no pair matches); the previous checkpoint is never lost before the
/// new one is whole.
public enum CheckpointPair {
    static let idKey = "checkpoint_id"

    static func pendingStatePath(_ statePath: String) -> String { statePath + ".next" }

    /// Writes the pair.
    /// - Parameter prepareModel: writes the model file (given the metadata to add) under a
    ///   temporary name beside its destination.
    static func save(modelStep: Int, state: TrainingState, trainer: Trainer, statePath: String,
                     prepareModel: ([String: String]) throws -> PendingFile) throws {
        let id = String(UInt64.random(in: 0...UInt64.max), radix: 16) + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        var s = state
        s.extra[idKey] = id
        s.extra["model_step"] = String(modelStep)
        let pendingModel = try prepareModel([idKey: id, "step": String(modelStep)])
        let pendingState: PendingFile
        do { pendingState = try TrainingState.prepare(s, trainer: trainer, for: statePath) } catch { pendingModel.discard(); throw error }
        let next = pendingStatePath(statePath)
        do { try pendingState.commit(as: next) } catch { pendingModel.discard(); throw error }
        try pendingModel.commit()
        try PendingFile(temporary: next, destination: statePath).commit()
    }

    /// The state file that belongs to the model at `path` (whose metadata is `modelMetadata`):
    /// `statePath`, or the `.next` file a save interrupted between its renames left behind
    /// (then moved into place).
    /// - Throws: `GenError` when neither is from the model's save.
    public static func resolve(modelPath path: String, modelMetadata: [String: String], statePath: String) throws -> String {
        let id = modelMetadata[idKey]
        let next = pendingStatePath(statePath)
        var seen: [String] = []
        for candidate in [statePath, next] where FileManager.default.fileExists(atPath: candidate) {
            guard let meta = try? SafeTensorsFile(path: candidate).metadata else {
                seen.append("\(candidate) is damaged")
                continue
            }
            let matches = id != nil ? meta[idKey] == id
                                    : meta[idKey] == nil && meta["step"] != nil && meta["step"] == modelMetadata["step"]
            if matches {
                if candidate == next { try PendingFile(temporary: next, destination: statePath).commit() }
                return statePath
            }
            seen.append("\(candidate) is from step \(meta["step"] ?? "?")")
        }
        if seen.isEmpty { throw GenError("cannot resume: \(statePath) does not exist (the run saved no optimizer state)") }
        throw GenError("cannot resume: \(path) (step \(modelMetadata["step"] ?? "?")) and its optimizer state are not from the same save (\(seen.joined(separator: "; "))); resuming would mix weights and moments: finetune from \(path) instead, or start again with --force")
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

/// What a model is loaded for (`Checkpoint.load`); none: training, every weight read in fp32.
public struct LoadOptions: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Only to run forward (sampled from; evaluated, with `.int8`): a model small enough
    /// (`GPTModel.arrangesForDecoding`) has its projections stored transposed as they are read
    /// (`GPTModel.arrangeForDecoding`); a larger one is read as stored, its F32 token
    /// embeddings where they lie in the file (`GPTModel.readEmbeddingsInPlace`).
    public static let decoding = LoadOptions(rawValue: 1 << 0)
    /// Rounded to 8 bits (`GPTModel.roundToInt8`); with `.decoding`, each projection and the
    /// token embeddings are rounded as they are read and their fp32 values are not kept
    /// (`GPTModel.int8Only`: a batched pass rebuilds them from the 8 bits, the same values),
    /// which saves their memory and the time to store them.
    public static let int8 = LoadOptions(rawValue: 1 << 1)
    /// Every tensor's name, shape and type checked, none read (the model's weights stay zero):
    /// for describing a file or taking its tokenizer, which then costs the header, not the
    /// whole file.
    public static let headerOnly = LoadOptions(rawValue: 1 << 2)
    /// With `.decoding`, a large model's projections read where they lie in the file whatever
    /// pages the kernel maps them with, or copied into the buffer whatever; without either,
    /// as those pages make faster (`Checkpoint.projectionsToReadInPlace`). For tests and
    /// measurements.
    public static let projectionsInPlace = LoadOptions(rawValue: 1 << 3)
    public static let projectionsCopied = LoadOptions(rawValue: 1 << 4)
}
