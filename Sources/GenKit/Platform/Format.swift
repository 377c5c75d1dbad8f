import Glibc

/// printf-style formatting (C's `vsnprintf`: `%.3f`, `%5.1f`, `%.3g`, `%ld` and `%02ld` for a
/// Swift `Int`, which is C's long, …) for numbers in messages and reports; text goes in by
/// interpolation. gen's binary does not load Foundation, whose `String(format:)` this replaces.
public func cFormat(_ format: String, _ args: CVarArg...) -> String {
    cFormat(format, arguments: args)
}

public func cFormat(_ format: String, arguments args: [CVarArg]) -> String {
    withVaList(args) { va in
        var buffer = [CChar](repeating: 0, count: 256)
        let n = Int(vsnprintf(&buffer, buffer.count, format, va))
        guard n >= buffer.count else { return String(cString: buffer) }
        return withVaList(args) { va2 in
            buffer = [CChar](repeating: 0, count: n + 1)
            _ = vsnprintf(&buffer, buffer.count, format, va2)
            return String(cString: buffer)
        }
    }
}

extension StringProtocol {
    /// The string without white space (and newlines) at either end.
    public func trimmed() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(self[first...last])
    }
}
