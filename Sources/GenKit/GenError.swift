/// gen's one error type: a failure a person can act on, in one line that speaks of files and
/// values. A setting that is wrong names itself in `setting` (the library's name for it, such
/// as "context" or "batch"), so that the command line can name its flag.
public struct GenError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A value given by the caller is out of range or inconsistent (exit 64 on the command line).
        case usage
        /// Anything else: a bad file, a failed write, a diverged run (exit 1).
        case failure
    }

    public var kind: Kind
    public var message: String
    /// The setting the message is about, if any.
    public var setting: String?

    public init(_ message: String, kind: Kind = .failure, setting: String? = nil) {
        self.message = message
        self.kind = kind
        self.setting = setting
    }

    /// A value given by the caller is wrong.
    public static func usage(_ message: String, setting: String? = nil) -> GenError {
        GenError(message, kind: .usage, setting: setting)
    }

    public var description: String { message }
}

/// Text from the user's input, for a message: in single quotes, at most `limit` characters
/// (then "…"), control and format characters as \u{…}, so that a message stays one line and
/// sends nothing to the terminal but text.
public func quoted<S: StringProtocol>(_ text: S, limit: Int = 24) -> String {
    var out = ""
    for (i, ch) in text.enumerated() {
        if i == limit { out += "…"; break }
        for s in ch.unicodeScalars {
            if isUnprintable(s) {
                out += "\\u{" + String(s.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(s)
            }
        }
    }
    return "'" + out + "'"
}

/// True for a character that a message shows by its code rather than as itself: C0 and C1
/// controls, DEL, format characters, and line and paragraph separators (each could break the
/// message's line or send the terminal something other than text).
func isUnprintable(_ s: Unicode.Scalar) -> Bool {
    let v = s.value, category = s.properties.generalCategory
    return v < 0x20 || (0x7F...0x9F).contains(v) || category == .format || category == .lineSeparator
        || category == .paragraphSeparator
}
