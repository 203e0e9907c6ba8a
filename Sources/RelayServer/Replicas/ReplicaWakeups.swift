import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Replicas on one PostgreSQL hear of each other's work by LISTEN/NOTIFY: a new revision, a
/// new status entry, a change to who may connect. Only wake-ups travel this way (payloads stay
/// tiny); the truth is in the tables, and every listener also re-reads on a timer, so a lost
/// notification (a dropped connection, a restarted PostgreSQL) costs latency, never data.
public struct ReplicaWakeups: Service {
    /// `relay_revision`: a source's newest revision was recorded (payload: the source).
    public static let revision = "relay_revision"
    /// `relay_status`: status entries were stored.
    public static let status = "relay_status"
    /// `relay_access`: agents, tokens or grants changed (sent by the schema's triggers).
    public static let access = PostgresSchema.accessChannel

    let store: PostgresStore
    let handlers: [String: @Sendable () -> Void]
    let logger: Logger

    public init(store: PostgresStore, handlers: [String: @Sendable () -> Void], logger: Logger) {
        self.store = store
        self.handlers = handlers
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.listen() }
    }

    /// Listens until cancelled, reconnecting with backoff (0.2 s … 5 s).
    func listen() async {
        var backoff = Duration.milliseconds(200)
        while !Task.isCancelled {
            do {
                let connection = try await store.dedicatedConnection()
                backoff = .milliseconds(200)
                do {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for (channel, handler) in handlers {
                            group.addTask {
                                for try await _ in try await connection.listen(channel) { handler() }
                            }
                        }
                        // Whatever was notified while this replica was not listening.
                        for handler in handlers.values { handler() }
                        // One channel ending means the connection went: start over.
                        try await group.next()
                        group.cancelAll()
                    }
                } catch {
                    if !Task.isCancelled {
                        logger.warning("lost PostgreSQL notifications; reconnecting", metadata: ["error": "\(String(reflecting: error))"])
                    }
                }
                try? await connection.close()
            } catch {
                logger.debug("cannot listen for PostgreSQL notifications", metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }
}
