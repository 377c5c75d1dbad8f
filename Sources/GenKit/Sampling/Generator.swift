import GenKernels
import FoundationEssentials
import Glibc

/// Text generation from a model, as llama2.c's `generate()`: the prompt is encoded and fed
/// through a KV cache, tokens are sampled one by one, and text streams out as it is made.
/// Past the context every token is still predicted from exactly the last `context` tokens
/// (nanoGPT's crop); stop strings end a sample before them; bytes of a character split
/// across tokens are held back until the character is whole.
public final class Generator {
    public let model: GPTModel
    public let tokenizer: Tokenizer
    public let sampler: Sampler
    let decoder: Decoder
    let threads: Int
    /// The logits handed to the sampler (which modifies them), (V).
    var scratch: [Float]

    /// One finished completion.
    public struct Completion: Sendable {
        /// The text generated after the prompt (without the stop string, if one ended it).
        public var text: String
        public var tokens: Int
        public var seconds: Double
        public var tokensPerSecond: Double { Double(tokens) / max(seconds, 1e-9) }
    }

    public init(model: GPTModel, tokenizer: Tokenizer, parameters: SamplingParameters, seed: UInt64,
                threads: Int = Parallel.cores) throws {
        let c = model.config
        try Machine.checkFits(Activations.bytes(config: c, B: 1, T: c.blockSize, training: false)
                              + 8 * Double(c.nLayer) * Double(c.blockSize) * Double(c.nEmbd) + Decoder.screenBytes(c),
                              "sampling from a model with a context of \(c.blockSize)")
        self.model = model
        self.tokenizer = tokenizer
        self.threads = threads
        sampler = Sampler(vocabSize: model.config.vocabSize, parameters: parameters, seed: seed)
        decoder = Decoder(model: model)
        scratch = [Float](repeating: 0, count: model.config.vocabSize)
    }

    /// Whether `generate` multiplies matrices on OpenBLAS for a prompt of `promptTokens` tokens
    /// (an empty one starts from one token) and up to `maxTokens` new ones: a prompt of more
    /// than one token is filled in one batched pass, a sequence longer than the context is
    /// filled again for each shifted window, and adapters take their products there. Tokens fed
    /// one at a time read the weights with gen's own kernels (`gen sample` loads OpenBLAS only
    /// when this is true).
    public func multipliesMatrices(promptTokens: Int, maxTokens: Int) -> Bool {
        let T = model.config.blockSize, p = min(max(promptTokens, 1), T)
        // New token k (1-based, k < maxTokens) is fed at position p + k - 1; at T or past it the
        // window is filled again.
        return model.adapters != nil || p > 1 || p + maxTokens > T + 1
    }

    /// Generates up to `maxTokens` tokens after `prompt`; `onText` receives the completion's
    /// text as it is made. A sample ends at `<|endoftext|>` (not printed) unless
    /// `throughEndOfText`. An empty prompt starts from `<|endoftext|>` (as GPT-2's unconditional
    /// samples do), else from the newline token, else from a random one.
    /// - Throws: `GenError` when the prompt holds characters the tokenizer does not know.
    @discardableResult
    public func generate(_ prompt: String, maxTokens: Int, stops: [String] = [], throughEndOfText: Bool = false,
                         onText: (String) -> Void = { _ in }) throws -> Completion {
        generate(tokens: try tokenizer.encode(prompt), maxTokens: maxTokens, stops: stops, throughEndOfText: throughEndOfText,
                 onText: onText)
    }

    /// The same from a prompt already encoded (`tokenizer.encode`): token ids below the
    /// vocabulary's size.
    public func generate(tokens prompt: [Int32], maxTokens: Int, stops: [String] = [], throughEndOfText: Bool = false,
                         onText: (String) -> Void = { _ in }) -> Completion {
        precondition(prompt.allSatisfy { $0 >= 0 && Int($0) < model.config.vocabSize }, "a prompt token outside the vocabulary")
        var ids = prompt
        if ids.isEmpty {
            ids = [tokenizer.endOfText ?? tokenizer.newlineToken ?? Int32(sampler.random.nextInt(below: model.config.vocabSize))]
        }
        let endOfText = throughEndOfText ? nil : tokenizer.endOfText
        let T = model.config.blockSize
        let start = Date()
        var stream = Utf8Stream()
        var stop = StopMatcher(stops)
        var text = ""
        var made = 0
        Parallel.withThreads(threads) {
            if ids.count == 1 {
                // One token: the single-position step, no batched pass (so no OpenBLAS), with
                // every logit as a fill gives them (the 8-bit screen is made from the next token on).
                decoder.reset()
                decoder.keep(.all)
                decoder.feed(ids[0])
            } else {
                ids.suffix(T).withUnsafeBufferPointer { decoder.fill($0) }
            }
            while made < maxTokens && !stop.stopped {
                let next = scratch.withUnsafeMutableBufferPointer { logits -> Int32 in
                    if let bounds = decoder.bounds {
                        return sampler.sample(decoder.logits, bounds: bounds, recent: ids[...]) { decoder.exactLogit($0) }
                    }
                    logits.baseAddress!.update(from: decoder.logits, count: logits.count)
                    return sampler.sample(logits.baseAddress!, recent: ids[...])
                }
                if next == endOfText { break }
                ids.append(next)
                made += 1
                let piece = stop.push(stream.push(tokenizer.bytes(of: next)))
                text += piece
                onText(piece)
                if stop.stopped || made == maxTokens { break }
                decoder.keep(sampler.logitsRead)
                ids.withUnsafeBufferPointer { decoder.advance(token: next, history: $0) }
            }
        }
        let tail = stop.push(stream.finish()) + stop.finish()
        text += tail
        onText(tail)
        return Completion(text: text, tokens: made, seconds: Date().timeIntervalSince(start))
    }
}
