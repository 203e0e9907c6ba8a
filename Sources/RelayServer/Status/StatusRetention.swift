import Foundation
import Logging
import RelayShared
import ServiceLifecycle

/// `status:` in relay.yaml.
public struct StatusSettings: Sendable, Decodable {
    public var retention: StatusRetention.Settings?
}

/// Deletes old status entries (the timeline and stream history) so the database does not grow
/// without limit: entries received longer than `maxAge` ago, and all but the newest
/// `maxEntries`. Runs at start and every `interval`, deleting in batches of short
/// transactions so readers and the tunnel's writes never wait long. The latest state of each
/// Flux object (`/api/v1/agents/{agent}/objects`, the overview) is kept whatever its age.
public struct StatusRetention: Service {
    /// As written in relay.yaml (`status.retention`).
    public struct Settings: Sendable, Decodable {
        public var maxAge: ConfigDuration?
        public var maxEntries: Int?
        public var interval: ConfigDuration?
    }

    public struct Policy: Sendable, Equatable {
        public var maxAge: Duration = .seconds(30 * 86_400)
        public var maxEntries = 1_000_000
        public var interval: Duration = .seconds(600)

        public init() {}

        static func resolve(_ settings: Settings?, fail: (String, String) -> ConfigError) throws(ConfigError) -> Policy {
            var policy = Policy()
            guard let settings else { return policy }
            if let value = settings.maxAge?.duration {
                guard value >= .seconds(1) else { throw fail("status.retention.maxAge", "must be at least 1s (e.g. 30d)") }
                policy.maxAge = value
            }
            if let value = settings.maxEntries {
                guard value >= 1 else { throw fail("status.retention.maxEntries", "must be at least 1 (e.g. 1000000)") }
                policy.maxEntries = value
            }
            if let value = settings.interval?.duration {
                guard value >= .seconds(1), value <= .seconds(86_400) else {
                    throw fail("status.retention.interval", "must be 1s…24h (e.g. 10m)")
                }
                policy.interval = value
            }
            return policy
        }
    }

    let registry: Registry
    let policy: Policy
    let logger: Logger
    /// Entries deleted per transaction.
    var batch = 1000

    public init(registry: Registry, policy: Policy, logger: Logger) {
        self.registry = registry
        self.policy = policy
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await sweep()
                try? await Task.sleep(for: policy.interval)
            }
        }
    }

    /// One pass: deletes what the policy no longer keeps; returns how many entries went.
    @discardableResult
    func sweep() async -> Int {
        var deleted = 0
        do {
            let cutoff = try await registry.statusRetentionCutoff(maxAge: policy.maxAge, maxEntries: policy.maxEntries)
            while !Task.isCancelled {
                let count = try await registry.deleteStatus(below: cutoff, batch: batch)
                deleted += count
                RelayMetrics.statusEntriesDeleted.increment(by: count)
                if count < batch { break }
                // Let waiting writers (status from agents) in between batches.
                await Task.yield()
            }
        } catch {
            logger.error("status retention failed; will retry", metadata: ["error": "\(error)"])
        }
        if deleted > 0 {
            logger.info("status retention: old entries deleted", metadata: [
                "deleted": "\(deleted)", "maxAge": "\(policy.maxAge)", "maxEntries": "\(policy.maxEntries)"])
        }
        return deleted
    }
}
