import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS chooses its kernels by CPU model when the library loads. Debian's 0.3.21 does not
/// know recent CPUs and falls back to its SSE3 "Prescott" kernels, about 5× slower than the
/// AVX-512 ones; an `OPENBLAS_CORETYPE` set in the environment may also name a weaker kernel
/// than the CPU can run. The choice is fixed when the library loads, so the only fix from inside
/// a running process is to start it again with `OPENBLAS_CORETYPE` set: `ensureFastKernel`.
public enum BLAS {
    /// The kernel family OpenBLAS loaded, e.g. "SkylakeX", "Haswell", "Prescott".
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// Keeps OpenBLAS single-threaded: gen's threads each call sgemm on their own block (see
    /// `Matmul`), so one owner has the cores. Cheap after the first call; every matrix product
    /// makes it.
    @inline(__always)
    public static func keepSingleThreaded() { _ = singleThreaded }

    /// OpenBLAS starts a pool of threads when it loads, and they spin in sched_yield for a
    /// while before sleeping, taking a core from gen's own threads. gen never uses them, so it
    /// ends them (`blas_thread_shutdown_`, looked up at run time as it is not in cblas.h).
    static let singleThreaded: Void = {
        openblas_set_num_threads(1)
        typealias Shutdown = @convention(c) () -> Int32
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "blas_thread_shutdown_") {
            _ = unsafeBitCast(sym, to: Shutdown.self)()
        }
    }()

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

    /// What to do about the loaded kernel: nothing, or restart with `OPENBLAS_CORETYPE` set.
    public enum Decision: Equatable, Sendable {
        case keep
        case restart(coreType: String)
    }

    /// Decides from the loaded kernel's name and the CPU's flags. A kernel of a lower tier than
    /// the CPU supports is replaced (`restart`); `forced` (the value of `GEN_BLAS_CORETYPE`)
    /// names a kernel to use as it is, for comparisons.
    public static func decide(loaded: String, flags: Set<String>, forced: String? = nil) -> Decision {
        if let forced, !forced.isEmpty {
            return loaded.lowercased() == forced.lowercased() ? .keep : .restart(coreType: forced)
        }
        guard let best = recommendedCore(flags: flags) else { return .keep }
        return tier(ofCore: loaded) < tier(ofCore: best) ? .restart(coreType: best) : .keep
    }

    /// Makes sure this process runs OpenBLAS's fastest kernel for the CPU: when it does not,
    /// sets `OPENBLAS_CORETYPE` and replaces the process with a fresh copy of itself (same
    /// arguments, same pid, same open files). Then ends OpenBLAS's own threads at once, before
    /// they spin through a command's start-up (reading and arranging a model) beside gen's.
    /// Call first thing in `main`.
    /// - Returns: nil when the kernel is right, else a one-line warning to print (the restart
    ///   failed or did not help); the process then goes on, slowly.
    public static func ensureFastKernel() -> String? {
        defer { keepSingleThreaded() }
        let env = environmentVariables()
        let decision = decide(loaded: coreName, flags: cpuFlags(), forced: env["GEN_BLAS_CORETYPE"])
        guard case .restart(let core) = decision else { return nil }
        if env["GEN_BLAS_RESTARTED"] != nil {
            return "warning: OpenBLAS runs its \(coreName) kernels although this CPU can run \(core); matrix products will be slow (set OPENBLAS_CORETYPE=\(core) before starting gen, or install OpenBLAS 0.3.25 or later)"
        }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("GEN_BLAS_RESTARTED", "1", 1)
        let args = CommandLine.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cargs.append(nil)
        execv("/proc/self/exe", cargs)
        return "warning: could not restart gen with OPENBLAS_CORETYPE=\(core) (\(String(cString: strerror(errno)))); matrix products will be slow"
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
