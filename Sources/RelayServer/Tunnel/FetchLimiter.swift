import Synchronization

/// Concurrent Fetch streams per agent. A slot is taken inside a Fetch's response body and
/// given back by `defer` there, so every way a Fetch ends returns it: done, an error, the
/// client cancelling, or gRPC never running the body because the client was gone first.
final class FetchLimiter: Sendable {
    private let running = Mutex<[String: Int]>([:])

    /// Takes a slot for `agent` unless it already has `limit`.
    func acquire(_ agent: String, limit: Int) -> Bool {
        running.withLock { running in
            let count = running[agent, default: 0]
            guard count < limit else { return false }
            running[agent] = count + 1
            return true
        }
    }

    func release(_ agent: String) {
        running.withLock { running in
            let count = running[agent, default: 1] - 1
            running[agent] = count > 0 ? count : nil
        }
    }

    /// Slots in use by `agent`.
    func inUse(_ agent: String) -> Int { running.withLock { $0[agent, default: 0] } }
}
