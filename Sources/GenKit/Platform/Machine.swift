import GenKernels
import FoundationEssentials
import Glibc

/// What gen runs on: cores, memory, the matrix kernel OpenBLAS loaded.
public enum Machine {
    /// Cores online.
    public static var cores: Int { Parallel.cores }

    /// Physical memory in bytes.
    public static var memoryBytes: Double {
        Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The kernel family OpenBLAS loaded, e.g. "SkylakeX", "Haswell".
    public static var matrixKernel: String { BLAS.coreName }

    /// Whether matrix products are gen's own where they apply (`Matmul.ownProduct`).
    public static var ownMatrixProducts: Bool { Matmul.ownProduct }

    /// Who multiplies matrices, for notes: "OpenBLAS Cooperlake", or "gen's own and OpenBLAS
    /// Cooperlake".
    public static var matrixProducts: String { (ownMatrixProducts ? "gen's own and " : "") + "OpenBLAS " + matrixKernel }

    /// Loads OpenBLAS now, with the best kernel this CPU runs (`BLAS`); returns a warning when
    /// that kernel could not be had (matrix products will be slow).
    /// - Throws: `GenError` when OpenBLAS cannot be loaded.
    public static func prepareMatrixKernel() throws -> String? {
        do { return try BLAS.prepare() } catch let e as BLAS.LoadError { throw GenError(e.description) }
    }

    /// Refuses work whose buffers (`bytes`) would not fit in memory, before they are allocated.
    /// - Throws: `GenError` naming `what`.
    public static func checkFits(_ bytes: Double, _ what: String) throws {
        if bytes > memoryBytes * 0.8 {
            throw GenError(what + cFormat(" needs %.3g GB of memory but the machine has %.1f GB", bytes / 1e9, memoryBytes / 1e9))
        }
    }

    /// Refuses a training run that cannot fit in memory (weights, gradients, two AdamW moments
    /// and activations), before anything is allocated, rather than be killed for it later.
    /// - Throws: `GenError` with the figures.
    /// With adapters the base weights are held once (no gradients, no moments) and the
    /// adapters four times.
    public static func checkTrainingFits(_ config: GPTConfig, _ settings: TrainingSettings, adapters: LoRAAdapters? = nil) throws {
        try config.validate()
        let params = config.parameterEstimate
        let held = adapters.map { 4 * params + 16 * Double($0.parameters.count) } ?? 16 * params
        let need = held + Activations.bytes(config: config, B: settings.batchSize, T: config.blockSize, training: true,
                                            loraRank: adapters?.config.rank ?? 0,
                                            loraDropout: (adapters?.config.dropout ?? 0) > 0)
        let have = memoryBytes
        if need > have * 0.8 {
            throw GenError(cFormat("this run needs %.3g GB of memory (weights, gradients, AdamW state and activations) but the machine has %.1f GB; use a smaller batch, context or model", need / 1e9, have / 1e9))
        }
    }
}
