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
