import NIOPosix

/// Synchronous work that may wait (a registry read waits for a free GRDB reader) run on NIO's
/// blocking-I/O threads instead of the cooperative pool. On a small machine the pool has as
/// many threads as cores; a burst of calls each blocked on a reader would hold all of them,
/// and the GRDB async reads holding the readers need one of those threads to finish: the relay
/// would stop answering (seen with 200 agents fetching at once on 2 cores).
enum BlockingWork {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}
