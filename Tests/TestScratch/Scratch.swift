import Foundation

/// The folder under which every test's scratch files go: one per test process, removed when the
/// process exits, so a run leaves nothing behind in the temporary folder. Shared by both test
/// targets.
public let scratchRoot: URL = {
    let u = FileManager.default.temporaryDirectory.appendingPathComponent("gen-tests-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(at: scratchRoot) }
    return u
}()

/// A fresh folder under `scratchRoot`.
public func tempDir() -> URL {
    let u = scratchRoot.appendingPathComponent(UUID().uuidString)
    try! FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    return u
}
