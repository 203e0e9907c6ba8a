import Foundation
import Logging
import ServiceLifecycle

/// Replicas on one PostgreSQL: this replica renews its lease every `interval`, and agents the
/// registry shows connected to a replica whose lease lapsed (killed, scaled away, its pod
/// replaced under a new name) are marked disconnected. Their sessions, if any, live on another
/// replica, which sets the flag again when they arrive.
public struct ReplicaLease: Service {
    let registry: Registry
    let replica: String
    let interval: Duration
    let logger: Logger

    public init(registry: Registry, replica: String, interval: Duration = .seconds(10), logger: Logger) {
        self.registry = registry
        self.replica = replica
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let cleared = try await registry.renewReplicaLease(replica, lapsedAfter: interval * 4)
                    if cleared > 0 { logger.notice("agents of replicas that stopped renewing their lease marked disconnected", metadata: ["agents": "\(cleared)"]) }
                } catch {
                    logger.warning("cannot renew this replica's lease; will retry", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}

extension Registry {
    /// Renews `replica`'s lease and clears the connected flag of agents whose replica's lease
    /// is older than `lapsedAfter` (or who name no replica); returns how many were cleared.
    public func renewReplicaLease(_ replica: String, lapsedAfter: Duration, now: Date = Date()) async throws -> Int {
        let now = Self.milliseconds(now)
        let oldest = now - lapsedAfter.components.seconds * 1000
        return try await store.write { db in
            try db.execute(sql: """
                INSERT INTO relay_replica(name, seen_ms) VALUES (?, ?)
                ON CONFLICT(name) DO UPDATE SET seen_ms = excluded.seen_ms
                """, arguments: [replica, now])
            try db.execute(sql: "DELETE FROM relay_replica WHERE seen_ms < ?", arguments: [now - 86_400_000])
            return try db.execute(sql: """
                UPDATE agent SET connected = 0
                WHERE connected != 0 AND (replica IS NULL OR replica NOT IN (SELECT name FROM relay_replica WHERE seen_ms >= ?))
                """, arguments: [oldest])
        }
    }
}
