import Logging
import Synchronization

/// Valid tokens in memory, so the tunnel never asks the database per heartbeat, and a
/// revocation (whichever process made it: `relay-server agents revoke` writes the same
/// registry file) ends the live sessions it concerns within one `refreshInterval`.
///
/// The registry keeps an access version that every change to agents, tokens or grants bumps.
/// A call (Connect, Fetch) reads that one row and uses the snapshot when it is current, so a
/// revoked token is refused at once; the snapshot is reloaded only when the version moved,
/// by one caller at a time. One loop reads the version every `refreshInterval` and tells the
/// live sessions whose tokens are gone. Before, every connection asked SQLite whether its
/// token was still valid on every tick (10,000 agents: 4,000 queries a second, synchronously
/// on the cooperative pool).
final class AccessDirectory: Sendable {
    static let refreshInterval: Duration = .milliseconds(500)

    private let registry: Registry
    private let sessions: LiveSessions
    private let logger: Logger
    private struct State {
        var snapshot: AccessSnapshot
        /// The reload under way, which other callers wait for instead of starting their own.
        var reloading: Task<AccessSnapshot, any Error>?
    }
    private let state: Mutex<State>

    init(registry: Registry, sessions: LiveSessions, logger: Logger) async throws {
        self.registry = registry
        self.sessions = sessions
        self.logger = logger
        state = Mutex(State(snapshot: try await registry.accessSnapshot()))
    }

    /// The agent a token hash belongs to now, or nil.
    func identity(forTokenSHA256 hash: String) async throws -> AgentIdentity? {
        try await current().identities[hash]
    }

    /// Whether `hash` is a valid token of `agent` now.
    func isValid(_ hash: String, agent: String) async throws -> Bool {
        try await identity(forTokenSHA256: hash)?.name == agent
    }

    /// The snapshot at the registry's current access version.
    func current() async throws -> AccessSnapshot {
        let version = try await registry.accessVersion()
        let known = state.withLock { $0.snapshot }
        if known.version == version { return known }
        return try await reload()
    }

    /// Reloads the snapshot (one reload at a time) and ends the sessions whose tokens are gone.
    private func reload() async throws -> AccessSnapshot {
        let task = state.withLock { state -> Task<AccessSnapshot, any Error> in
            if let running = state.reloading { return running }
            let registry = self.registry
            let running = Task { try await registry.accessSnapshot() }
            state.reloading = running
            return running
        }
        let fresh: AccessSnapshot
        do { fresh = try await task.value } catch {
            state.withLock { if $0.reloading == task { $0.reloading = nil } }
            throw error
        }
        let changed = state.withLock { state -> Bool in
            if state.reloading == task { state.reloading = nil }
            guard fresh.version > state.snapshot.version else { return false }
            state.snapshot = fresh
            return true
        }
        if changed { sessions.revoke(notIn: fresh) }
        return fresh
    }

    /// Until cancelled: notices changes nobody's call noticed, and ends revoked sessions.
    func watch() async {
        var failing = false
        while !Task.isCancelled {
            do { try await Task.sleep(for: Self.refreshInterval) } catch { return }
            do {
                _ = try await current()
                failing = false
            } catch {
                // Sessions go on with what was known; logged once per failing spell.
                if !failing { logger.error("cannot read the registry's tokens; revocations wait until it can", metadata: ["error": "\(error)"]) }
                failing = true
            }
        }
    }
}
