import Foundation
import Testing
import GenKit
import GenKernels
import TestScratch
#if canImport(Glibc)
import Glibc
#endif

/// KV-cache decoding against the full forward pass.
@Suite struct DecoderTests {
    func model() throws -> GPTModel {
        let f = try ParityTests.load("gpt_odd")
        return try loadModel(f.file, config: f.config)
    }

    /// Feeding a whole context token by token gives the full forward's logits at every position.
    @Test func cacheMatchesFullForward() throws {
        let model = try model()
        let c = model.config
        var rng = Random(seed: 11)
        let tokens: [Int32] = (0..<c.blockSize).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
        let full = fullLogits(model, tokens)
        expectDecoderMatches(model, tokens, full)
        // A prompt filled in one batch, then decoded, agrees too.
        let decoder = Decoder(model: model)
        decoder.feed(tokens[0])
        decoder.reset()
        tokens.prefix(5).withUnsafeBufferPointer { decoder.fill($0) }
        decoder.feed(tokens[5])
        let ref = Array(full[(5 * c.vocabSize)..<(6 * c.vocabSize)])
        #expect(relativeError(Array(UnsafeBufferPointer(start: decoder.logits, count: c.vocabSize)), ref) < 1e-5)
    }

    /// Past the context, each prediction equals the full forward over the last blockSize tokens
    /// (nanoGPT's crop).
    @Test func slidingWindowMatchesCroppedForward() throws {
        let model = try model()
        let c = model.config
        var rng = Random(seed: 12)
        let sequence: [Int32] = (0..<(c.blockSize + 9)).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
        let decoder = Decoder(model: model)
        let acts = Activations(config: c, B: 1, T: c.blockSize, training: false)
        decoder.feed(sequence[0])
        for n in 2...sequence.count {
            sequence[0..<n].withUnsafeBufferPointer { decoder.advance(token: sequence[n - 1], history: $0) }
            let window = Array(sequence[max(0, n - c.blockSize)..<n])
            GPT.forward(model.views, c, acts, tokens: window, targets: nil, B: 1, t: window.count)
            let ref = Array(UnsafeBufferPointer(start: acts.logits + (window.count - 1) * c.vocabSize, count: c.vocabSize))
            let got = Array(UnsafeBufferPointer(start: decoder.logits, count: c.vocabSize))
            #expect(relativeError(got, ref) < 1e-5, "after \(n) tokens")
        }
    }

    /// A model arranged for decoding (projections stored transposed) gives the logits of the
    /// model as it was, batched and token by token; loading with `.decoding` arranges it as read.
    @Test func decodingLayoutComputesTheSameModel() throws {
        let plain = try model(), arranged = try model()
        arranged.arrangeForDecoding()
        #expect(arranged.arrangedForDecoding && !plain.arrangedForDecoding)
        let c = plain.config
        var rng = Random(seed: 14)
        let tokens: [Int32] = (0..<c.blockSize).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
        let full = fullLogits(plain, tokens)
        #expect(relativeError(fullLogits(arranged, tokens), full) < 1e-6)
        expectDecoderMatches(arranged, tokens, full)
        for folder in ["lmhead", "half"] {
            let path = HuggingFaceTests.root + "/" + folder
            let a = try Checkpoint.load(path).model, b = try Checkpoint.load(path, .decoding).model
            a.arrangeForDecoding()
            #expect(b.arrangedForDecoding && a.parameters.array == b.parameters.array, "\(folder)")
        }
    }

    /// Heads of 64 and 80 channels (the value sums held in registers 64 lanes at a time, and a
    /// tail), arranged for decoding and not: the decoder gives the full forward's logits, and
    /// the same bits on 1, 2 or 3 threads (slabs and rows are cut by shape, not by thread).
    @Test(arguments: [128, 160])
    func wideHeadsMatchFullForward(_ C: Int) {
        let model = GPTModel(config: GPTConfig(nLayer: 2, nHead: 2, nEmbd: C, blockSize: 40, vocabSize: 50))
        model.initialize(seed: UInt64(C))
        var rng = Random(seed: 15)
        let tokens: [Int32] = (0..<40).map { _ in Int32(rng.nextInt(below: 50)) }
        let full = fullLogits(model, tokens)
        #expect(Matmul.vectorSlabs(K: C, N: 3 * C) > 1)
        for arranged in [false, true] {
            if arranged { model.arrangeForDecoding() }
            expectDecoderMatches(model, tokens, full)
            let runs = [1, 2, 3].map { n in
                Parallel.withThreads(n) {
                    let decoder = Decoder(model: model)
                    return tokens.flatMap { t in
                        decoder.feed(t)
                        return Array(UnsafeBufferPointer(start: decoder.logits, count: 50))
                    }
                }
            }
            #expect(runs[0] == runs[1] && runs[0] == runs[2], "arranged: \(arranged)")
        }
    }

    /// A model too large to arrange (38M projection weights) loaded for decoding reads its
    /// projections as stored and its token embeddings where they lie in the file, is marked
    /// sampling-only, and decodes the logits of the same file loaded for training, bit for bit,
    /// whether its projections are copied, read in place, or some of each, one position at a
    /// time or a prompt at once.
    @Test func largeModelReadsEmbeddingsInPlace() throws {
        let c = GPTConfig(nLayer: 3, nHead: 8, nEmbd: 1024, blockSize: 16, vocabSize: 64)
        #expect(!GPTModel.arrangesForDecoding(c))
        let model = GPTModel(config: c)
        model.initialize(seed: 31)
        let chars = try CharTokenizer(vocabulary: (0..<64).map { Unicode.Scalar(UInt8(48 + $0)) })
        let path = tempDir().appendingPathComponent("large.safetensors").path
        try Checkpoint(model: model, tokenizer: chars).save(path)
        let plain = try Checkpoint.load(path).model
        let copied = try Checkpoint.load(path, [.decoding, .projectionsCopied]).model
        let mapped = try Checkpoint.load(path, [.decoding, .projectionsInPlace]).model
        #expect(!plain.samplingOnly && !plain.embeddingsInPlace && !plain.projectionsInPlace)
        #expect(copied.embeddingsInPlace && copied.samplingOnly && !copied.arrangedForDecoding && !copied.projectionsInPlace)
        #expect(mapped.embeddingsInPlace && mapped.samplingOnly && !mapped.arrangedForDecoding && mapped.projectionsInFile == 12)
        // The file's first 12 MB (the embeddings and most of the first layer's attention weights)
        // dropped from the page cache and written again 64 KB at a time: where the kernel held the
        // file in 2 MB pages, those weights are now in small ones and are copied, the rest read in
        // place (elsewhere all are copied); either way, the same logits.
        let fd = open(path, O_RDWR)
        #expect(fd >= 0 && fsync(fd) == 0 && posix_fadvise(fd, 0, 12 << 20, POSIX_FADV_DONTNEED) == 0)
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        for at in stride(from: 0, to: 12 << 20, by: 1 << 16) {
            #expect(pread(fd, &chunk, chunk.count, off_t(at)) == chunk.count && pwrite(fd, chunk, chunk.count, off_t(at)) == chunk.count)
        }
        close(fd)
        let decided = try Checkpoint.load(path, .decoding).model
        #expect(decided.projectionsInFile < 12, "\(decided.projectionsInFile)")
        let tokens: [Int32] = [5, 60, 0, 33, 17]
        let logits = [plain, copied, mapped, decided].map { m in
            let decoder = Decoder(model: m)
            return tokens.flatMap { t in
                decoder.feed(t)
                return Array(UnsafeBufferPointer(start: decoder.logits, count: 64))
            }
        }
        #expect(logits[0] == logits[1] && logits[0] == logits[2] && logits[0] == logits[3])
        let prompts = [plain, copied, mapped, decided].map { m in
            let decoder = Decoder(model: m)
            tokens.withUnsafeBufferPointer { decoder.fill($0) }
            return Array(UnsafeBufferPointer(start: decoder.logits, count: 64))
        }
        #expect(prompts[0] == prompts[1] && prompts[0] == prompts[2] && prompts[0] == prompts[3])
        for m in [copied, mapped, decided] { expectDecoderMatches(m, tokens, fullLogits(plain, tokens)) }
    }

    /// A large model in a sharded Hugging Face folder, its embeddings in one file and its blocks
    /// in another, reads both in place (the model keeps both files mapped) and decodes the
    /// logits of the same folder loaded for training, bit for bit.
    @Test func shardedModelReadsEachFileInPlace() throws {
        let c = GPTConfig(nLayer: 3, nHead: 8, nEmbd: 1024, blockSize: 16, vocabSize: 300)
        let model = GPTModel(config: c)
        model.initialize(seed: 37)
        let dir = tempDir()
        let fm = FileManager.default
        try fm.copyItem(atPath: HuggingFaceTests.root + "/sharded/tokenizer.json", toPath: dir.appendingPathComponent("tokenizer.json").path)
        try #"{"model_type": "gpt2", "n_layer": 3, "n_head": 8, "n_embd": 1024, "n_positions": 16, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0}"#
            .write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let base = UnsafeRawPointer(model.parameters.pointer)
        let shards = ["model-00001-of-00002.safetensors": model.layout.tensors.filter { $0.name.hasPrefix("w") },
                      "model-00002-of-00002.safetensors": model.layout.tensors.filter { !$0.name.hasPrefix("w") }]
        var map: [String] = []
        for (file, tensors) in shards {
            let items = tensors.map {
                SafeTensorsWriter.Item(name: "transformer." + $0.name, shape: $0.shape, bytes: UnsafeRawBufferPointer(start: base + $0.offset * 4, count: $0.count * 4))
            }
            try SafeTensorsWriter.write(items, metadata: ["format": "pt"], to: dir.appendingPathComponent(file).path)
            map += tensors.map { "\"transformer.\($0.name)\": \"\(file)\"" }
        }
        try "{\"weight_map\": {\(map.joined(separator: ", "))}}".write(to: dir.appendingPathComponent("model.safetensors.index.json"), atomically: true, encoding: .utf8)
        let plain = try HuggingFaceGPT2.load(folder: dir.path).model
        let sampled = try HuggingFaceGPT2.load(folder: dir.path, [.decoding, .projectionsInPlace]).model
        #expect(sampled.embeddingsInPlace && sampled.projectionsInFile == 12)
        let tokens: [Int32] = [5, 260, 0, 33, 17]
        let logits = [plain, sampled].map { m in
            let decoder = Decoder(model: m)
            return tokens.flatMap { t in
                decoder.feed(t)
                return Array(UnsafeBufferPointer(start: decoder.logits, count: 300))
            }
        }
        #expect(logits[0] == logits[1])
    }

    /// A model file gen writes has its data on a 64-byte boundary and is held by the page cache
    /// in pages as large as the kernel makes for a file written in one piece (its tensors go in
    /// one writev, not a write each), so that a large model read in place for sampling maps in
    /// 2 MB pages. Where the kernel maps a file written whole so (ext4 on Linux 6.18 does), every
    /// inner 2 MB block of one holding 16 tensors of sizes that are no multiple of a page maps
    /// whole; a file written 64 KB at a time maps in no huge page.
    @Test func writtenModelFilesMapInHugePages() throws {
        let dir = tempDir()
        /// For each whole 2 MB block of the file at `path` after the first (which holds the
        /// header) and before the last, whether it maps in a huge page (nil: the kernel cannot say).
        func huge(_ path: String) throws -> [Bool]? {
            let fd = open(path, O_RDONLY)
            #expect(fd >= 0)
            defer { close(fd) }
            let size = Int(lseek(fd, 0, SEEK_END))
            let p = try #require(mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0))
            #expect(p != MAP_FAILED)
            defer { munmap(p, size) }
            let block = 2 << 20, first = (Int(bitPattern: p) + block) / block, last = (Int(bitPattern: p) + size) / block
            let blocks = (first ..< last).map { UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: $0 * block), count: block) }
            #expect(blocks.count >= 20)
            return Memory.mappedInHugePages(blocks, mapping: UnsafeRawBufferPointer(start: p, count: size))
        }
        let sizes = (0..<16).map { 700_001 + 37 * $0 }   // floats: 2.8 MB each, 45 MB in all
        let whole = [Float](repeating: 1.5, count: sizes.reduce(0, +))
        let reference = dir.appendingPathComponent("one.bin").path
        let model = dir.appendingPathComponent("pieces.safetensors").path
        let chunked = dir.appendingPathComponent("chunked.bin").path
        try whole.withUnsafeBytes { raw in
            try SafeTensorsWriter.writeRaw(raw, to: reference)
            var at = 0
            let items = sizes.enumerated().map { i, n in
                defer { at += 4 * n }
                return SafeTensorsWriter.Item(name: "t\(i)", shape: [n], bytes: UnsafeRawBufferPointer(rebasing: raw[at ..< at + 4 * n]))
            }
            try SafeTensorsWriter.write(items, metadata: [:], to: model)
            let fd = open(chunked, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            for at in stride(from: 0, to: raw.count, by: 1 << 16) {
                #expect(write(fd, raw.baseAddress! + at, min(1 << 16, raw.count - at)) > 0)
            }
            close(fd)
        }
        // The data begins on a 64-byte boundary (a cache line's start).
        var header: UInt64 = 0
        let fd = open(model, O_RDONLY)
        #expect(pread(fd, &header, 8, 0) == 8)
        close(fd)
        #expect((8 + UInt64(littleEndian: header)) % 64 == 0, "data at \(8 + header)")
        guard let one = try huge(reference), let pieces = try huge(model), let small = try huge(chunked) else {
            print("writtenModelFilesMapInHugePages: this kernel does not say which pages it maps huge; not asserted")
            return
        }
        #expect(!small.contains(true), "\(small)")
        if one.allSatisfy({ $0 }) { #expect(pieces.allSatisfy { $0 }, "\(pieces)") }
        else { print("writtenModelFilesMapInHugePages: this kernel maps a file written whole in huge pages at \(one); not asserted") }
    }

    /// Loading for decoding arranges a model whose projections hold up to 32M weights (the
    /// stories15M shape), not GPT-2 124M's shape.
    @Test func decodingArrangesSmallModelsOnly() {
        #expect(GPTModel.arrangesForDecoding(GPTConfig(nLayer: 6, nHead: 6, nEmbd: 288, blockSize: 256, vocabSize: 32000)))
        #expect(GPTModel.arrangesForDecoding(GPTConfig(nLayer: 6, nHead: 6, nEmbd: 384, blockSize: 256, vocabSize: 65)))
        #expect(!GPTModel.arrangesForDecoding(GPTConfig(nLayer: 12, nHead: 12, nEmbd: 768, blockSize: 1024, vocabSize: 50257)))
    }

    /// The dot product of decoding's attention (lanes summed by halving) against a sum in
    /// Double, for lengths with and without a tail; whole numbers sum exactly.
    @Test(arguments: [1, 15, 16, 31, 48, 64, 80, 200])
    func dotMatchesDoubleSum(_ n: Int) {
        var rng = Random(seed: UInt64(n))
        let a = randomArray(n, &rng), b = randomArray(n, &rng)
        let exact = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let scale = zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
        #expect(abs(Double(dot(a, b, n)) - exact) <= 1e-6 * scale)
        let ones = [Float](repeating: 1, count: n), counting = (0..<n).map { Float($0 + 1) }
        #expect(dot(ones, counting, n) == Float(n * (n + 1) / 2))
        #expect(treeSum(Float32x16(counting.prefix(16) + [Float](repeating: 0, count: max(0, 16 - n)))) == Float(min(n, 16) * (min(n, 16) + 1) / 2))
    }

    /// The transposition behind the layout, over whole 16×16 tiles and ragged edges, on one
    /// thread and (from 65,536 values) split over the pool.
    @Test(arguments: [(16, 16), (48, 32), (37, 70), (5, 3), (100, 17), (300, 250), (512, 200), (70, 1001), (1000, 70)])
    func transposeMatchesNaive(_ shape: (Int, Int)) {
        let (K, N) = shape
        var rng = Random(seed: UInt64(K * N))
        let src = randomArray(K * N, &rng)
        var dst = [Float](repeating: 0, count: K * N)
        Matmul.transpose(&dst, src, K: K, N: N)
        #expect(dst == (0..<(K * N)).map { src[($0 % K) * N + $0 / K] })
    }
}
