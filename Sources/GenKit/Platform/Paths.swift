/// Splitting paths without Foundation's NSString path methods (whose
/// `deletingLastPathComponent` traps on a one-character path).
public enum Paths {
    /// The folder part of `path` ("." when there is none; "/" for a file at the root).
    public static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }

    /// The last component of `path` (without a trailing slash).
    public static func fileName(of path: String) -> String {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return String(p) }
        return String(p[p.index(after: slash)...])
    }
}
