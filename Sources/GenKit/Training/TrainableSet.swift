import GenKernels

/// Which parameters a run trains. Every one today; a run of adapters trains a few small tensors
/// and leaves the rest frozen. AdamW moments are held only for the trained floats, packed in
/// the order of `runs`.
public struct TrainableSet: Sendable {
    /// A contiguous stretch of the parameter buffer that trains under one weight-decay rule.
    public struct Run: Sendable, Equatable {
        public var offset: Int        // in the parameter (and gradient) buffer
        public var count: Int
        public var decays: Bool
        public var stateOffset: Int   // in the AdamW moments
    }

    public let runs: [Run]
    /// Floats trained: the length of each AdamW moment.
    public let count: Int
    /// Contiguous stretches of trained gradients, whatever their decay (for the global norm).
    let spans: [Range<Int>]

    /// The tensors of `layout` that `trains` selects.
    public init(_ layout: ParameterLayout, trains: (ParameterLayout.Tensor) -> Bool) {
        self.init(layout.tensors.filter(trains).map { ($0.offset, $0.count, $0.decays) })
    }

    /// Every adapter (all are matrices, so all decay).
    public init(_ adapters: LoRAAdapters) {
        self.init(adapters.tensors.map { ($0.offset, $0.count, true) })
    }

    /// Tensors given as (offset, count, decays) in their buffer.
    init(_ tensors: [(offset: Int, count: Int, decays: Bool)]) {
        var runs: [Run] = []
        var spans: [Range<Int>] = []
        var count = 0
        for t in tensors.sorted(by: { $0.offset < $1.offset }) {
            if let last = runs.last, last.decays == t.decays, last.offset + last.count == t.offset {
                runs[runs.count - 1].count += t.count
            } else {
                runs.append(Run(offset: t.offset, count: t.count, decays: t.decays, stateOffset: count))
            }
            if let last = spans.last, last.upperBound == t.offset {
                spans[spans.count - 1] = last.lowerBound..<(t.offset + t.count)
            } else {
                spans.append(t.offset..<(t.offset + t.count))
            }
            count += t.count
        }
        self.runs = runs
        self.spans = spans
        self.count = count
    }

    /// Every parameter (full training and finetuning).
    public static func all(_ layout: ParameterLayout) -> TrainableSet {
        TrainableSet(layout) { _ in true }
    }
}
