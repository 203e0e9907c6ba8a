import Foundation
import Metrics

/// The relay's metrics (exposed at `GET /metrics` on the `http` address).
enum RelayMetrics {
    static let agentsConnected = Gauge(label: "relay_agents_connected")
    static let fetchBytes = Counter(label: "relay_fetch_bytes_sent_total")
    static let fetches = Counter(label: "relay_fetches_total")
    static let fetchResumes = Counter(label: "relay_fetch_resumes_total")
    static let deliveries = Counter(label: "relay_deliveries_total")
    /// Rollouts a failure halted (rollout waves).
    static let rolloutsHalted = Counter(label: "relay_rollouts_halted_total")
    /// Agent × source pairs a revision is held from now (freezes, waves, halts).
    static let rolloutHeld = Gauge(label: "relay_rollout_held_agents")
    /// Access files applied, and refused (invalid: the last good one stays).
    static let accessFileApplied = Counter(label: "relay_access_file_applied_total")
    static let accessFileRefused = Counter(label: "relay_access_file_refused_total")
    /// Revisions released through a freeze by an operator.
    static let rolloutReleases = Counter(label: "relay_rollout_releases_total")
    /// From packaging to the agent's acknowledgement.
    static let deliveryLatency = Timer(label: "relay_delivery_latency_seconds")
    static let statusEntries = Counter(label: "relay_status_entries_total")
    /// Deleted by retention (`status.retention`).
    static let statusEntriesDeleted = Counter(label: "relay_status_entries_deleted_total")
    static let notificationsPending = Gauge(label: "relay_notifications_pending")
    static let notificationsSent = Counter(label: "relay_notifications_sent_total")
    static let notificationsFailed = Counter(label: "relay_notification_attempts_failed_total")

    static func packaged(source: String, duration: Duration) {
        Counter(label: "relay_artifacts_packaged_total", dimensions: [("source", source)]).increment()
        Timer(label: "relay_packaging_duration_seconds", dimensions: [("source", source)]).recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    /// A Helm chart or OCI artifact source that could not be mirrored, by `UpstreamError` code.
    static func upstreamFailed(source: String, code: String) {
        Counter(label: "relay_upstream_failures_total", dimensions: [("source", source), ("code", code)]).increment()
    }

    /// When a Helm chart or OCI artifact source was last checked successfully (Unix seconds).
    static func upstreamSucceeded(source: String) {
        Gauge(label: "relay_upstream_last_success_timestamp_seconds", dimensions: [("source", source)]).record(Date().timeIntervalSince1970)
    }
}

extension RelayMetrics {
    /// Writes per registry transaction of the group commit (connects, disconnects, deliveries).
    static let registryBatchSize = Recorder(label: "relay_registry_batch_writes")
    /// Sessions welcomed, by how the relay watches them: `transport` (HTTP/2 keepalive PINGs,
    /// `TunnelKeepalive`) or `heartbeat` (Heartbeat messages, agents that predate it).
    /// Heartbeat messages received (agents on transport keepalive send none).
    static let heartbeatMessages = Counter(label: "relay_heartbeat_messages_total")
    static let sessionsByLiveness = (
        transport: Counter(label: "relay_sessions_welcomed_total", dimensions: [("liveness", "transport")]),
        heartbeat: Counter(label: "relay_sessions_welcomed_total", dimensions: [("liveness", "heartbeat")]))
}
