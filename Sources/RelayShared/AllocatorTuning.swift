#if canImport(Glibc)
import Glibc
#endif

/// Both processes move artifact bytes in 1 MiB chunks, so they allocate and free a buffer
/// of just over 1 MiB per chunk (protobuf serialization, gRPC framing). glibc's defaults
/// hand such blocks back to the kernel and fault in fresh zeroed pages for the next one;
/// on the tunnel benchmark (Benchmarks/tunnel_bench.py) that churn cost ~30% of the relay's
/// CPU per GiB served. Serving blocks up to 8 MiB from the heap and trimming the heap only
/// beyond 32 MiB of free space keeps those buffers reused (+~65 MB RSS on the relay).
/// That trim threshold applies per malloc arena, and glibc makes up to 8 arenas per core:
/// buffers allocated on one thread and freed on another (file reads on the thread pool,
/// writes on the event loops) left hundreds of MiB parked in idle arenas when the agent
/// served 8 streams at once (Benchmarks/flux_endpoint_bench.py). Arenas are therefore capped
/// at two per core. An operator's own `GLIBC_TUNABLES=glibc.malloc.…` setting wins.
public enum AllocatorTuning {
    public static func apply() {
        #if canImport(Glibc)
        if let tunables = getenv("GLIBC_TUNABLES"), String(cString: tunables).contains("glibc.malloc.") { return }
        // <malloc.h> is not in the Glibc module: look mallopt(3) up (nil = RTLD_DEFAULT).
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        let mTrimThreshold: Int32 = -1, mMmapThreshold: Int32 = -3, mArenaMax: Int32 = -8  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX
        _ = mallopt(mMmapThreshold, 8 << 20)
        _ = mallopt(mTrimThreshold, 32 << 20)
        _ = mallopt(mArenaMax, Int32(max(2, 2 * sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        #endif
    }
}
