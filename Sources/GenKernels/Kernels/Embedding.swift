/// Token plus position embedding.
public enum Embedding {
    /// tokens (B,T), wte (V,C), wpe (maxT,C) -> out (B,T,C)
    public static func forward(_ out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>,
                               wte: UnsafePointer<Float>, wpe: UnsafePointer<Float>,
                               B: Int, T: Int, C: Int) {
        Parallel.forRanges(B * T, minimumPerThread: 64, Forward(out: out, tokens: tokens, wte: wte, wpe: wpe, T: T, C: C))
    }

    struct Forward: RangeKernel {
        let out: UnsafeMutablePointer<Float>
        let tokens: UnsafePointer<Int32>
        let wte, wpe: UnsafePointer<Float>
        let T, C: Int
        func run(_ rows: Range<Int>) {
            for r in rows {
                let t = r % T
                let tok = Int(tokens[r])
                let o = out + r * C, a = wte + tok * C, p = wpe + t * C
                var c = 0
                while c + 16 <= C { store16(load16(a + c) + load16(p + c), o + c); c += 16 }
                while c < C { o[c] = a[c] + p[c]; c += 1 }
            }
        }
    }

    /// dout (B,T,C), tokens (B,T) -> dwte (V,C) +=, dwpe (maxT,C) +=
    public static func backward(dwte: UnsafeMutablePointer<Float>, dwpe: UnsafeMutablePointer<Float>,
                                dout: UnsafePointer<Float>, tokens: UnsafePointer<Int32>,
                                B: Int, T: Int, C: Int, V: Int) {
        // Positions: each thread owns a range of t.
        Parallel.forRanges(T, minimumPerThread: 8, PositionGradient(dwpe: dwpe, dout: dout, B: B, T: T, C: C))
        // Tokens repeat, so each thread owns a range of token ids and scans all positions.
        Parallel.forRanges(V, minimumPerThread: 16, TokenGradient(dwte: dwte, dout: dout, tokens: tokens, B: B, T: T, C: C))
    }

    struct TokenGradient: RangeKernel {
        let dwte: UnsafeMutablePointer<Float>
        let dout: UnsafePointer<Float>
        let tokens: UnsafePointer<Int32>
        let B, T, C: Int
        func run(_ ids: Range<Int>) {
            for r in 0..<(B * T) {
                let tok = Int(tokens[r])
                if ids.contains(tok) { axpy(1, dout + r * C, dwte + tok * C, C) }
            }
        }
    }

    struct PositionGradient: RangeKernel {
        let dwpe: UnsafeMutablePointer<Float>
        let dout: UnsafePointer<Float>
        let B, T, C: Int
        func run(_ ts: Range<Int>) {
            for t in ts {
                for b in 0..<B { axpy(1, dout + (b * T + t) * C, dwpe + t * C, C) }
            }
        }
    }
}
