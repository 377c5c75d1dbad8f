import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS, loaded (dlopen) when a matrix product first needs it, so that a command that
/// multiplies no matrices (tokenizing, `gen info`, help) starts without it, and set up as gen
/// wants it:
/// - single-threaded: gen's threads each call sgemm on their own block (see `Matmul`), so one
///   owner has the cores. OpenBLAS starts a pool of threads as it loads, which would spin in
///   sched_yield beside gen's; they are ended at once (`blas_thread_shutdown_`). (Setting
///   `OPENBLAS_NUM_THREADS` instead would mean changing the environment while other threads of
///   the process may be reading it: a test process runs many tests at once.)
/// - the right kernel. OpenBLAS chooses its kernels by CPU model as it loads. Debian's 0.3.21 does
///   not know recent CPUs and falls back to its SSE3 "Prescott" kernels, about 5× slower than the
///   AVX-512 ones; an `OPENBLAS_CORETYPE` set in the environment may also name a weaker kernel
///   than the CPU can run. When the loaded kernel is weaker than the CPU's best (`decide`), the
///   library is closed and loaded again with `OPENBLAS_CORETYPE` set to the best, in the same
///   process (gen used to start itself again for that: twice the start-up of every command).
///   `GEN_BLAS_CORETYPE` names a kernel to use as it is, for comparisons.
public enum BLAS {
    /// The loaded library's entry points, and the warning to print when its kernel is still
    /// weaker than the CPU's best.
    struct Library {
        typealias SGEMM = @convention(c) (CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, Int32, Int32, Int32, Float,
                                          UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32, Float,
                                          UnsafeMutablePointer<Float>?, Int32) -> Void
        let sgemm: SGEMM
        let coreName: String
        let warning: String?
    }

    /// Why OpenBLAS could not be loaded.
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    /// The library, loaded on first use.
    static let library: Result<Library, LoadError> = load()

    /// Loads OpenBLAS now (a no-op once loaded): nil when its kernel is right, else a one-line
    /// warning to print (the CPU's best kernel could not be loaded; matrix products will be slow).
    /// - Throws: `LoadError` when the library cannot be loaded.
    public static func prepare() throws -> String? {
        try library.get().warning
    }

    /// The kernel family OpenBLAS loaded, e.g. "SkylakeX", "Haswell", "Prescott" (loading it).
    public static var coreName: String {
        (try? library.get().coreName) ?? "unknown"
    }

    /// C (M,N) = alpha · op(A) (M,K) · op(B) (K,N) + beta · C, row-major: OpenBLAS's sgemm, on the
    /// calling thread. A process that cannot load OpenBLAS stops here: the reason on standard
    /// error as one line, exit status 1 (gen's commands call `prepare` first, before they read
    /// or write anything, and report it as an error).
    @inline(__always)
    static func sgemm(_ transA: CBLAS_TRANSPOSE, _ transB: CBLAS_TRANSPOSE, _ M: Int32, _ N: Int32, _ K: Int32,
                      _ alpha: Float, _ A: UnsafePointer<Float>, _ lda: Int32, _ B: UnsafePointer<Float>, _ ldb: Int32,
                      _ beta: Float, _ C: UnsafeMutablePointer<Float>, _ ldc: Int32) {
        switch library {
        case .success(let l): l.sgemm(CblasRowMajor, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
        case .failure(let e):
            fputs("Error: \(e.description)\n", stderr)
            exit(1)
        }
    }

    /// Names under which the library is looked for: `GEN_BLAS_LIBRARY` when set (another
    /// OpenBLAS build, by path), else Debian's libopenblas0's.
    static func libraryNames(_ env: [String: String]) -> [String] {
        if let name = env["GEN_BLAS_LIBRARY"], !name.isEmpty { return [name] }
        return ["libopenblas.so.0", "libopenblas.so"]
    }

    static func load() -> Result<Library, LoadError> {
        do { return .success(try loadLibrary()) } catch let e as LoadError { return .failure(e) } catch {
            return .failure(LoadError(description: "cannot load OpenBLAS (\(error))"))
        }
    }

    static func loadLibrary() throws -> Library {
        let env = environmentVariables()
        let forced = env["GEN_BLAS_CORETYPE"].flatMap { $0.isEmpty ? nil : $0 }
        let flags = cpuFlags()
        if let forced {
            try checkRunnable(forced: forced, flags: flags)
            setenv("OPENBLAS_CORETYPE", forced, 1)
        }
        let names = libraryNames(env)
        var (handle, name) = try open(names)
        var warning: String?
        if case .reload(let core) = decide(loaded: name, flags: flags, forced: forced) {
            dlclose(handle)   // its threads ended first (`open`), so none runs code being unmapped
            setenv("OPENBLAS_CORETYPE", core, 1)
            (handle, name) = try open(names)
            if decide(loaded: name, flags: flags, forced: forced) != .keep {
                warning = "warning: OpenBLAS runs its \(name) kernels although this CPU can run \(core); matrix products will be slow (install OpenBLAS 0.3.25 or later)"
            }
        }
        guard let f = dlsym(handle, "cblas_sgemm") else { throw LoadError(description: "OpenBLAS has no cblas_sgemm") }
        return Library(sgemm: unsafeBitCast(f, to: Library.SGEMM.self), coreName: name, warning: warning)
    }

    /// Opens the library, makes it single-threaded (its pool, started as it loaded, ended), and
    /// reads the name of the kernel it chose.
    static func open(_ names: [String]) throws -> (UnsafeMutableRawPointer, String) {
        typealias CoreName = @convention(c) () -> UnsafeMutablePointer<CChar>?
        typealias SetThreads = @convention(c) (Int32) -> Void
        typealias Shutdown = @convention(c) () -> Int32
        var reasons: [String] = []
        for name in names {
            if let h = dlopen(name, RTLD_LAZY | RTLD_LOCAL) {
                if let f = dlsym(h, "openblas_set_num_threads") { unsafeBitCast(f, to: SetThreads.self)(1) }
                if let f = dlsym(h, "blas_thread_shutdown_") { _ = unsafeBitCast(f, to: Shutdown.self)() }
                let core = dlsym(h, "openblas_get_corename").flatMap { unsafeBitCast($0, to: CoreName.self)() }
                return (h, core.map { String(cString: $0) } ?? "unknown")
            }
            reasons.append(dlerror().map { String(cString: $0) } ?? name)
        }
        throw LoadError(description: "cannot load OpenBLAS (\(reasons.first ?? "")); install it (apt-get install libopenblas0) or name it in GEN_BLAS_LIBRARY")
    }

    /// CPU feature flags as Linux lists them in /proc/cpuinfo.
    public static func cpuFlags(cpuinfo: String? = nil) -> Set<String> {
        let text = cpuinfo ?? readSmallFile("/proc/cpuinfo") ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }

    /// Tiers of OpenBLAS x86-64 kernels, by the widest vector unit their sgemm uses.
    static func tier(ofCore name: String) -> Int {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 3
        case "haswell", "zen": return 2
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator": return 1
        default: return 0
        }
    }

    /// The best OpenBLAS kernel family a CPU with these flags can run, or nil when no choice
    /// beats what OpenBLAS detects by itself (non-x86 machines, old CPUs).
    public static func recommendedCore(flags: Set<String>) -> String? {
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(flags.contains) {
            return "SkylakeX"
        }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        if flags.contains("avx") { return "SandyBridge" }
        return nil
    }

    /// Refuses a forced kernel family wider than this CPU's vector unit (AVX-512 kernels on an
    /// AVX2 CPU would stop the process at their first instruction).
    /// - Throws: `LoadError` naming the kernel and the CPU's best.
    public static func checkRunnable(forced: String, flags: Set<String>) throws {
        let best = recommendedCore(flags: flags)
        guard tier(ofCore: forced) > tier(ofCore: best ?? "") else { return }
        throw LoadError(description: "GEN_BLAS_CORETYPE=\(forced) names kernels this CPU cannot run (its best: \(best ?? "none of the vector kernels"))")
    }

    /// What to do about the loaded kernel: nothing, or load it again with `OPENBLAS_CORETYPE` set.
    public enum Decision: Equatable, Sendable {
        case keep
        case reload(coreType: String)
    }

    /// Decides from the loaded kernel's name and the CPU's flags. A kernel of a lower tier than
    /// the CPU supports is replaced (`reload`); `forced` (the value of
    /// `GEN_BLAS_CORETYPE`) names a kernel to use as it is, for comparisons.
    public static func decide(loaded: String, flags: Set<String>, forced: String? = nil) -> Decision {
        if let forced, !forced.isEmpty {
            return loaded.lowercased() == forced.lowercased() ? .keep : .reload(coreType: forced)
        }
        guard let best = recommendedCore(flags: flags) else { return .keep }
        return tier(ofCore: loaded) < tier(ofCore: best) ? .reload(coreType: best) : .keep
    }
}

func environmentVariables() -> [String: String] {
    var result: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") {
            result[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        p += 1
    }
    return result
}

func readSmallFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes.append(contentsOf: buf[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}
