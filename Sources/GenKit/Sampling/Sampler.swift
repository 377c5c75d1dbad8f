import GenKernels
import FoundationEssentials
import Glibc

/// What a sampler reads of the logits (`Sampler.logitsRead`), and so what a decoder must make.
public enum LogitsRead: Equatable, Sendable {
    /// Every logit, exact.
    case all
    /// The k largest, exact; the others may be −∞.
    case largest(Int)
    /// Every logit within a stated bound, and the exact value of any one on request.
    case bounded
}

/// How to pick each next token.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 picks the most likely token (greedy).
    public var temperature: Float = 0.8
    /// Keep only the k most likely tokens (0: all).
    public var topK = 0
    /// Keep the smallest set of tokens whose probability reaches p (1: all); with top-k, the
    /// probabilities among the k kept (as Hugging Face's and llama.cpp's samplers apply it).
    public var topP: Float = 1
    /// Drop tokens less likely than minP × the most likely one's probability (0: none).
    public var minP: Float = 0
    /// Divide positive logits (multiply negative ones) of recently seen tokens by this (1: off).
    public var repeatPenalty: Float = 1
    /// How many recent tokens the repeat penalty looks at.
    public var repeatWindow = 64
    public init() {}
}

/// Picks next tokens from logits. Its buffers are allocated once, for the vocabulary size.
/// With top-k, top-p or min-p, only the candidates are ranked (a heap of the k, or of 256, most
/// likely tokens), not the whole vocabulary, unless the 256 cannot hold the nucleus.
public final class Sampler {
    /// Tokens ranked for top-p and min-p before falling back to the whole vocabulary.
    static let candidates = 256
    public var parameters: SamplingParameters
    public var random: Random
    var order: [Int32]
    var probs: [Float]
    /// Bounded sampling's running sums of `probs`, one per `span` tokens, and the tokens whose
    /// weights are exact.
    static let span = 256
    /// Turned-down draws after which bounded sampling makes every weight exact.
    static let turnDowns = 64
    var sums: [Float]
    var known: [Bool]
    /// Bounded top-p sampling's exact logits: the candidates', or every one.
    var exactLogits: [Float]
    /// Bounded sampling's copy of the logits and bounds with the repeat penalty applied.
    var penalisedLogits: [Float]
    var penalisedBounds: [Float]
    /// The repeat penalty's window: `windowMarks[i] == windowStamp` for the tokens in it
    /// (`markWindow`).
    var windowMarks: [UInt32]
    var windowStamp: UInt32 = 0
    /// Bounded top-p draws in a row that computed every logit (a nucleus too large or too flat
    /// for the candidates), and the draws from every logit that then follow before the bounds
    /// are tried again: a flat distribution does not pay for the 8-bit pass for nothing.
    static let nucleusMisses = 4, fullDraws = 64
    var misses = 0
    var fullDrawsLeft = 0

    public init(vocabSize: Int, parameters: SamplingParameters, seed: UInt64) {
        self.parameters = parameters
        random = Random(seed: seed)
        order = [Int32](repeating: 0, count: vocabSize)
        probs = [Float](repeating: 0, count: vocabSize)
        sums = [Float](repeating: 0, count: (vocabSize + Self.span - 1) / Self.span)
        known = [Bool](repeating: false, count: vocabSize)
        exactLogits = [Float](repeating: 0, count: vocabSize)
        penalisedLogits = [Float](repeating: 0, count: vocabSize)
        penalisedBounds = [Float](repeating: 0, count: vocabSize)
        windowMarks = [UInt32](repeating: 0, count: vocabSize)
    }

    /// What `sample` needs of the logits: the k largest alone when greedy (1, whatever top-k,
    /// top-p and min-p say) or with top-k (k: top-p and min-p then weigh the k among
    /// themselves), and with a repeat penalty above 1 the k + `repeatWindow` largest (the
    /// penalty only lowers logits, and only the window's tokens': a token among the k largest
    /// after it has at most k − 1 unpenalised tokens and the window's others before it); with
    /// the temperature alone, with min-p or with top-p (with or without the penalty), every
    /// logit within a bound (`sample(_:bounds:recent:exact:)`); else every logit (top-p with
    /// min-p, greedy or top-k with a penalty below 1, which raises logits; and top-p for a
    /// while after its bounds settled nothing `nucleusMisses` times in a row). Asked again
    /// before each token.
    public var logitsRead: LogitsRead {
        let p = parameters
        func largest(_ k: Int) -> LogitsRead {
            p.repeatPenalty == 1 ? .largest(k) : p.repeatPenalty > 1 ? .largest(k + p.repeatWindow) : .all
        }
        if p.temperature <= 0 { return largest(1) }   // the most likely token passes every rule
        if p.topK > 0 { return largest(p.topK) }
        if p.topP < 1 { return p.minP > 0 || fullDrawsLeft > 0 ? .all : .bounded }
        return .bounded
    }

    /// Plain sampling (the temperature alone, `logitsRead == .bounded`) from logits known only
    /// within bounds, |exact_i − logits_i| ≤ bounds_i, and `exact(i)` for any one of them: the
    /// same distribution as `sample` over the exact logits, softmax(exact / T), by rejection.
    /// A token is proposed with weight exp((logits_i + bounds_i)/T), above its exact weight, and
    /// kept with probability exp((exact_i − logits_i − bounds_i)/T); a token turned down weighs
    /// its exact weight from then on (so a low temperature, whose bounds are wide against T,
    /// settles on the few tokens that matter), and the draw repeats. Each round keeps token i
    /// with probability ∝ its exact weight, whatever the rounds before it did, so the pick is
    /// distributed as softmax(exact / T). Reads `exact` about once per token where bounds are
    /// small against T. With min-p, `sampleAboveFloor` instead; with top-p, `sampleNucleus`.
    /// With the repeat penalty, the recent tokens' exact logits are penalised as `sample` does
    /// and given bound 0, in a copy of the logits and bounds, before any of these.
    public func sample(_ logits: UnsafePointer<Float>, bounds: UnsafePointer<Float>, recent: ArraySlice<Int32> = [],
                       exact: (Int) -> Float) -> Int32 {
        precondition(logitsRead == .bounded)
        guard parameters.repeatPenalty != 1 && !recent.isEmpty else { return sampleBounded(logits, bounds: bounds, exact: exact) }
        return penalisedLogits.withUnsafeMutableBufferPointer { pl in
            penalisedBounds.withUnsafeMutableBufferPointer { pb in
                let l = pl.baseAddress!, b = pb.baseAddress!
                l.update(from: logits, count: pl.count)
                b.update(from: bounds, count: pb.count)
                let stamp = markWindow(recent) { i in l[i] = penalise(exact(i)); b[i] = 0 }
                return windowMarks.withUnsafeBufferPointer { marks in
                    sampleBounded(l, bounds: b) { marks[$0] == stamp ? l[$0] : exact($0) }
                }
            }
        }
    }

    /// Calls `body` once for each distinct token among the last `repeatWindow` of `recent`,
    /// marking it in `windowMarks` with a new stamp, which it returns: the penalty's set of
    /// tokens without a set allocated per token.
    @discardableResult
    func markWindow(_ recent: ArraySlice<Int32>, _ body: (Int) -> Void) -> UInt32 {
        windowStamp &+= 1
        if windowStamp == 0 {   // wrapped around: no mark may look new
            windowMarks.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            windowStamp = 1
        }
        let stamp = windowStamp
        windowMarks.withUnsafeMutableBufferPointer { marks in
            for t in recent.suffix(parameters.repeatWindow) where marks[Int(t)] != stamp {
                marks[Int(t)] = stamp
                body(Int(t))
            }
        }
        return stamp
    }

    /// A recent token's logit under the repeat penalty: divided by it when positive, else
    /// multiplied.
    @inline(__always)
    func penalise(_ l: Float) -> Float { l > 0 ? l / parameters.repeatPenalty : l * parameters.repeatPenalty }

    func sampleBounded(_ logits: UnsafePointer<Float>, bounds: UnsafePointer<Float>, exact: (Int) -> Float) -> Int32 {
        if parameters.topP < 1 { return sampleNucleus(logits, bounds: bounds, exact: exact) }
        if parameters.minP > 0 { return sampleAboveFloor(logits, bounds: bounds, exact: exact) }
        let V = probs.count, inverse = 1 / parameters.temperature, span = Self.span
        var decided = 0   // tokens turned down (their weights exact), listed in order[0..<decided]
        var exactWeights = false
        defer { for j in 0..<decided { known[Int(order[j])] = false } }
        return probs.withUnsafeMutableBufferPointer { w in
            sums.withUnsafeMutableBufferPointer { sums in
                let top = shiftedExp(w.baseAddress!, logits, plus: bounds, scale: inverse, n: V, span: span,
                                     sums: sums.baseAddress!)
                while true {
                    var total: Float = 0
                    for s in sums { total += s }
                    // The proposal: the token where the running sum passes r·total.
                    var r = random.nextFloat() * total
                    var b = 0
                    for c in 0..<sums.count where sums[c] > 0 {
                        b = c
                        if r < sums[c] { break }
                        r -= sums[c]
                    }
                    var i = b * span, last = b * span
                    let end = min(V, (b + 1) * span)
                    while i < end {
                        if w[i] > 0 { last = i; if r < w[i] { break }; r -= w[i] }
                        i += 1
                    }
                    if i == end { i = last }
                    if exactWeights || known[i] { return Int32(i) }
                    let l = exact(i) * inverse, upper = (logits[i] + bounds[i]) * inverse
                    if random.nextFloat() < fastExp(l - upper) { return Int32(i) }
                    known[i] = true
                    order[decided] = Int32(i)
                    decided += 1
                    w[i] = fastExp(l - top)
                    if decided == Self.turnDowns {
                        // Logits not finite (or bounds far too wide): every weight made exact,
                        // so that the next draw is kept.
                        exactWeights = true
                        // On the pool: a product of the whole output layer.
                        let weights = w.baseAddress!, blockSums = sums.baseAddress!
                        known.withUnsafeBufferPointer { known in
                            Parallel.forRanges(sums.count) { blocks in
                                for c in blocks {
                                    var s: Float = 0
                                    for j in (c * span)..<min(V, (c + 1) * span) {
                                        if !known[j] { weights[j] = fastExp(exact(j) * inverse - top) }
                                        s += weights[j]
                                    }
                                    blockSums[c] = s
                                }
                            }
                        }
                        continue
                    }
                    var s: Float = 0
                    for j in (b * span)..<end { s += w[j] }
                    sums[b] = s
                }
            }
        }
    }

    /// Min-p sampling from logits known within bounds (`sample(_:bounds:recent:exact:)` with min-p): the
    /// tokens kept are those whose weight exp((l_i − l_max)/T) reaches minP, as `sample` keeps
    /// them from every exact logit, so only the tokens whose upper bound reaches the best lower
    /// bound plus T·ln(minP) can be kept, and only theirs are computed exactly (all of them, on
    /// the pool, when the bounds rule out few). They are ranked and drawn as `sample` draws the
    /// kept ones: the same distribution, the same tokens in the same order.
    func sampleAboveFloor(_ logits: UnsafePointer<Float>, bounds: UnsafePointer<Float>, exact: (Int) -> Float) -> Int32 {
        let V = probs.count, inverse = 1 / parameters.temperature, minP = parameters.minP
        var best = -Float.infinity
        for i in 0..<V { best = max(best, logits[i] - bounds[i]) }
        // Slack for the rounding of the weights: it only adds candidates.
        let cut = best + parameters.temperature * Glibc.log(minP) - 1e-4 * (abs(best) + 1)
        var n = 0
        order.withUnsafeMutableBufferPointer { order in
            for i in 0..<V where !(logits[i] + bounds[i] < cut) {
                order[n] = Int32(i)
                n += 1
            }
        }
        var kept = 0, total: Float = 0
        probs.withUnsafeMutableBufferPointer { w in
            w.update(repeating: 0)
            order.withUnsafeBufferPointer { order in
                let weights = w.baseAddress!
                // On the pool from 256 candidates (128 a thread); fewer run here.
                Parallel.forRanges(n, minimumPerThread: 128) { r in
                    for j in r { let i = Int(order[j]); weights[i] = exact(i) * inverse }
                }
                var top = -Float.infinity
                for j in 0..<n { top = max(top, w[Int(order[j])]) }
                for j in 0..<n {
                    let i = Int(order[j]), e = fastExp(w[i] - top)
                    if e >= minP { w[i] = e; kept += 1; total += e } else { w[i] = 0 }
                }
            }
        }
        // No exact weight reached the floor (logits not finite): the first candidate.
        guard kept > 0 else { return n > 0 ? order[0] : 0 }
        _ = rankTop(kept)
        return draw(kept, total: total)
    }

    /// Top-p sampling from logits known within bounds (`sample(_:bounds:recent:exact:)` with top-p):
    /// the nucleus `sample` keeps from every exact logit — the most likely tokens until their
    /// probabilities reach p — settled from candidates alone when the bounds allow it. The
    /// candidates are the 256 tokens whose upper bounds rank first, computed exactly and ranked;
    /// the normaliser lies between their exact weights plus the other tokens' lower-bound
    /// weights and the same plus their upper-bound weights. The nucleus is the first
    /// k candidates when every other token's upper bound is below the k-th's exact logit (none
    /// can rank inside it) and the first k − 1 reach less than p of the largest normaliser the
    /// bounds allow while the first k reach p of the largest, each with a margin for rounding.
    /// Otherwise every logit is computed (on the pool) and `sample` draws. The kept tokens are
    /// drawn as `sample` draws them: the same distribution, the same tokens in the same order.
    func sampleNucleus(_ logits: UnsafePointer<Float>, bounds: UnsafePointer<Float>, exact: (Int) -> Float) -> Int32 {
        let V = probs.count, inverse = 1 / parameters.temperature, topP = parameters.topP
        let n = min(V, Self.candidates)
        // Upper ends of the scaled logits in probs; the candidates, the n highest, in order.
        probs.withUnsafeMutableBufferPointer { pr in
            for i in 0..<V { pr[i] = (logits[i] + bounds[i]) * inverse }
        }
        _ = rankTop(n)
        let top = probs[Int(order[0])]   // no weight below is above 1
        // Every other token's upper end is at most the last candidate's.
        let others = n < V ? probs[Int(order[n - 1])] : -Float.infinity
        let (lowAll, highAll) = boundedMass(logits, bounds, scale: inverse, shift: top, n: V)
        // A margin for the rounding of sums (here and in `sample`'s softmax).
        let margin: Float = 2e-4
        return exactLogits.withUnsafeMutableBufferPointer { xb -> Int32 in
            let x = xb.baseAddress!
            var lowMass: Float = 0, highMass: Float = 0
            for j in 0..<n {
                let i = Int(order[j])
                highMass += fastExp(probs[i] - top)
                lowMass += fastExp((logits[i] - bounds[i]) * inverse - top)
                x[i] = exact(i) * inverse
            }
            // The candidates by exact logit, most likely first (ties: lower id first).
            order.withUnsafeMutableBufferPointer { o in
                var candidates = UnsafeMutableBufferPointer(rebasing: o[0..<n])
                candidates.sort { (a: Int32, b: Int32) -> Bool in
                    let xa: Float = x[Int(a)], xb: Float = x[Int(b)]
                    return xa > xb || (xa == xb && a < b)
                }
            }
            var mass: Float = 0
            for j in 0..<n { mass += fastExp(x[Int(order[j])] - top) }
            // The normaliser's least and most: the candidates' exact weights plus the others'
            // lower or upper ones.
            let zLow = (mass + max(0, lowAll - lowMass - margin * lowAll)) * (1 - margin)
            let zHigh = (mass + max(0, highAll - highMass) + margin * highAll) * (1 + margin)
            var before: Float = 0, through: Float = 0, k = 0
            while k < n {
                before = through
                through += fastExp(x[Int(order[k])] - top)
                k += 1
                if through >= topP * zHigh { break }
            }
            let last = x[Int(order[k - 1])]
            if through >= topP * zHigh && before < topP * zLow && others < last - margin * (abs(last) + 1) {
                misses = 0
                let best = x[Int(order[0])]
                var total: Float = 0
                for j in 0..<k {
                    let i = Int(order[j])
                    probs[i] = fastExp(x[i] - best)
                    total += probs[i]
                }
                return draw(k, total: total)
            }
            misses += 1
            if misses == Self.nucleusMisses { misses = 0; fullDrawsLeft = Self.fullDraws }
            // Every logit exact, on the pool, and drawn as from full logits.
            Parallel.forRanges(V, minimumPerThread: 1024) { r in
                for i in r { x[i] = exact(i) }
            }
            return sampleExact(x, recent: [])
        }
    }

    /// The next token given logits (V) and the tokens so far (for the repeat penalty).
    /// The logits are modified.
    public func sample(_ logits: UnsafeMutablePointer<Float>, recent: ArraySlice<Int32>) -> Int32 {
        if fullDrawsLeft > 0 { fullDrawsLeft -= 1 }
        return sampleExact(logits, recent: recent)
    }

    func sampleExact(_ logits: UnsafeMutablePointer<Float>, recent: ArraySlice<Int32>) -> Int32 {
        let V = probs.count
        let p = parameters
        if p.repeatPenalty != 1 {
            markWindow(recent) { i in logits[i] = penalise(logits[i]) }
        }
        if p.temperature <= 0 { return Int32(indexOfMax(logits, V)) }
        let inverse = 1 / p.temperature
        probs.withUnsafeMutableBufferPointer { pr in
            for i in 0..<V { pr[i] = logits[i] * inverse }
        }
        if p.topK > 0 {
            // Top-k: the k largest of l/T, weighed by exp(l/T − max) among themselves, so that
            // no other logit's value matters; then min-p (a weight under minP of the largest's)
            // and top-p (the first of them whose weights reach topP of the k's) cut the ranking.
            let k = rankTop(min(p.topK, V))
            var total: Float = 0
            probs.withUnsafeMutableBufferPointer { pr in
                let top = pr[Int(order[0])]
                for j in 0..<k {
                    let i = Int(order[j])
                    pr[i] = exp(pr[i] - top)
                    total += pr[i]
                }
            }
            let keep = cut(k, total: total)
            if keep < k {
                total = 0
                for j in 0..<keep { total += probs[Int(order[j])] }
            }
            return draw(keep, total: total)
        }
        // Softmax at the temperature, in place in `probs`.
        probs.withUnsafeMutableBufferPointer { _ = softmaxRow($0.baseAddress!, V) }
        let needsOrder = p.topP < 1 || p.minP > 0
        if !needsOrder {
            let r = random.nextFloat()
            var acc: Float = 0
            for i in 0..<V {
                acc += probs[i]
                if r < acc { return Int32(i) }
            }
            return Int32(V - 1)
        }
        let pr = probs
        var ranked = rankTop(min(V, Self.candidates))
        // The candidates must hold the whole nucleus and every token above the min-p floor;
        // when they may not, rank the whole vocabulary.
        if ranked < V {
            var mass: Float = 0
            for k in 0..<ranked { mass += pr[Int(order[k])] }
            let nucleusShort = p.topP < 1 && mass < p.topP
            let floorShort = p.minP > 0 && pr[Int(order[ranked - 1])] >= pr[Int(order[0])] * p.minP
            if nucleusShort || floorShort { ranked = rankTop(V) }
        }
        let keep = cut(ranked, total: 1)
        var total: Float = 0
        for k in 0..<keep { total += pr[Int(order[k])] }
        return draw(keep, total: total)
    }

    /// How many of order[0..<n] (most likely first, weights probs[order[j]] summing to `total`)
    /// min-p and top-p keep: those weighing at least minP × the first's, then the first whose
    /// weights reach topP × total; at least one.
    func cut(_ n: Int, total: Float) -> Int {
        let p = parameters
        var keep = n
        if p.minP > 0 {
            let floor = probs[Int(order[0])] * p.minP
            var k = 0
            while k < keep && probs[Int(order[k])] >= floor { k += 1 }
            keep = max(1, k)
        }
        if p.topP < 1 {
            var acc: Float = 0, k = 0
            while k < keep {
                acc += probs[Int(order[k])]
                k += 1
                if acc >= p.topP * total { break }
            }
            keep = max(1, k)
        }
        return keep
    }

    /// One of order[0..<n], each with weight probs[order[j]] (summing to `total`).
    func draw(_ n: Int, total: Float) -> Int32 {
        let r = random.nextFloat() * total
        var acc: Float = 0
        for j in 0..<n {
            acc += probs[Int(order[j])]
            if r < acc { return order[j] }
        }
        return order[n - 1]
    }

    /// Puts the n most likely tokens in order[0..<n], most likely first (ties: lower id first),
    /// through a heap of n that most tokens leave at one comparison. Returns n.
    func rankTop(_ n: Int) -> Int {
        let V = probs.count
        // "a ranks after b": less likely, or as likely with a higher id.
        @inline(__always) func after(_ a: Int32, _ b: Int32, _ pr: UnsafeBufferPointer<Float>) -> Bool {
            pr[Int(a)] < pr[Int(b)] || (pr[Int(a)] == pr[Int(b)] && a > b)
        }
        probs.withUnsafeBufferPointer { pr in
            order.withUnsafeMutableBufferPointer { heap in
                // A heap whose root ranks last of those kept.
                func siftDown(_ start: Int, _ count: Int) {
                    var i = start
                    while true {
                        let l = 2 * i + 1, r = l + 1
                        var worst = i
                        if l < count && after(heap[l], heap[worst], pr) { worst = l }
                        if r < count && after(heap[r], heap[worst], pr) { worst = r }
                        if worst == i { return }
                        heap.swapAt(i, worst)
                        i = worst
                    }
                }
                for i in 0..<n { heap[i] = Int32(i) }
                for i in stride(from: n / 2 - 1, through: 0, by: -1) { siftDown(i, n) }
                if n < V {
                    for i in n..<V where after(heap[0], Int32(i), pr) {
                        heap[0] = Int32(i)
                        siftDown(0, n)
                    }
                }
                // Heap sort: the root (the last-ranked) goes to the end each time.
                var count = n
                while count > 1 {
                    heap.swapAt(0, count - 1)
                    count -= 1
                    siftDown(0, count)
                }
            }
        }
        return n
    }
}

/// Ends output before a stop string: text is held back while it could still be the start of one.
public struct StopMatcher {
    public let stops: [String]
    var held = ""
    public private(set) var stopped = false

    public init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds text; returns what may be written now.
    public mutating func push(_ text: String) -> String {
        if stopped { return "" }
        held += text
        if stops.isEmpty { defer { held = "" }; return held }
        for s in stops {
            if let r = held.unicodeScalars.firstRange(of: s.unicodeScalars) {   // by scalars, not characters: "\n" is found inside "\r\n"
                stopped = true
                let out = String(held[..<r.lowerBound])
                held = ""
                return out
            }
        }
        // Keep the longest suffix that is a prefix of some stop string.
        var keep = 0
        for s in stops {
            let maxLen = min(s.count - 1, held.count)
            if maxLen <= 0 { continue }
            for len in stride(from: maxLen, to: 0, by: -1) where held.hasSuffix(String(s.prefix(len))) {
                keep = max(keep, len)
                break
            }
        }
        let cut = held.index(held.endIndex, offsetBy: -keep)
        let out = String(held[..<cut])
        held = String(held[cut...])
        return out
    }

    /// The text still held when generation ends without a stop.
    public mutating func finish() -> String {
        defer { held = "" }
        return stopped ? "" : held
    }
}
