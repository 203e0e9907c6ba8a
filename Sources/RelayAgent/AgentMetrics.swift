import Metrics

/// relay-agent's metrics (exposed at `GET /metrics` on the `listen` address).
enum AgentMetrics {
    static let connected = Gauge(label: "relay_agent_connected")
    /// Connects the relay refused for now with a retry hint (admission control), honoured.
    static let sessionsDeferred = Counter(label: "relay_agent_sessions_deferred_total")
    /// Sessions that went to another relay than the one before (`relays`, or a drain's redirect).
    static let relaySwitches = Counter(label: "relay_agent_relay_switches_total")
    static let published = Counter(label: "relay_agent_artifacts_published_total")
    static let fetchBytes = Counter(label: "relay_agent_fetch_bytes_total")
    static let fetchResumes = Counter(label: "relay_agent_fetch_resumes_total")
    static let damagedChunks = Counter(label: "relay_agent_damaged_chunks_total")
    static let fetchFailures = Counter(label: "relay_agent_fetch_failures_total")
    static let corruptArtifacts = Counter(label: "relay_agent_corrupt_artifacts_total")
    static let journalBacklog = Gauge(label: "relay_agent_status_journal_backlog")
    static let journalBytes = Gauge(label: "relay_agent_status_journal_bytes")
    static let journalGaps = Gauge(label: "relay_agent_status_journal_gaps")
    static let fluxEvents = Counter(label: "relay_agent_flux_events_total")
    static let reconcileRequests = Counter(label: "relay_agent_reconcile_requests_total")

    static func journal(_ journal: StatusJournal) {
        let summary = journal.summary
        journalBacklog.record(summary.backlog)
        journalBytes.record(summary.backlogBytes)
        journalGaps.record(summary.gaps)
    }
}
