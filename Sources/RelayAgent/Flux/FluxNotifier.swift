import ArtifactMirror
import Foundation
import Logging
import RelayShared

/// Tells Flux about each publication: applies the source's ExternalArtifact, nudges the
/// OCIRepositories that point at it, calls Receiver webhooks. One task per source; a newer
/// publication of the same source replaces a pending one. Failures are retried with
/// backoff (a Kubernetes API that is down delays Flux; it never blocks delivery).
public actor FluxNotifier {
    let externalArtifacts: ExternalArtifactWriter?
    let nudger: OCIRepositoryNudger?
    let receivers: ReceiverCaller?
    let logger: Logger
    let retryInitial: Duration
    let retryMax: Duration
    let maxAttempts: Int
    private var work: [String: Task<Void, Never>] = [:]

    public init(externalArtifacts: ExternalArtifactWriter?, nudger: OCIRepositoryNudger?, receivers: ReceiverCaller?,
                logger: Logger, retryInitial: Duration = .seconds(1), retryMax: Duration = .seconds(60), maxAttempts: Int = 12) {
        self.externalArtifacts = externalArtifacts
        self.nudger = nudger
        self.receivers = receivers
        self.logger = logger
        self.retryInitial = retryInitial
        self.retryMax = retryMax
        self.maxAttempts = maxAttempts
    }

    public var isEmpty: Bool { externalArtifacts == nil && nudger == nil && receivers == nil }

    /// Schedules the notifications for `record`, replacing any pending ones for its source.
    public func submit(_ record: ArtifactRecord) {
        guard !isEmpty else { return }
        work[record.source]?.cancel()
        work[record.source] = Task { await self.deliver(record) }
    }

    /// Cancels everything pending.
    public func stop() {
        for task in work.values { task.cancel() }
        work.removeAll()
    }

    /// RFC 3339 with fractional seconds, as `flux reconcile` writes into requestedAt.
    static func requestToken(_ date: Date) -> String { RFC3339.format(date, milliseconds: true) }

    private func deliver(_ record: ArtifactRecord) async {
        var backoff = Backoff(initial: retryInitial, maximum: retryMax)
        var eaDone = externalArtifacts == nil, nudged = nudger == nil, called = receivers == nil
        // One token per publication: retries of the same nudge keep it.
        let token = Self.requestToken(Date())
        for attempt in 1...maxAttempts {
            if Task.isCancelled { return }
            var failures: [String] = []
            if !eaDone, let writer = externalArtifacts {
                do {
                    let name = try await writer.publish(record)
                    eaDone = true
                    logger.info("ExternalArtifact updated", metadata: ["name": "\(writer.namespace)/\(name)", "revision": "\(record.revision)"])
                } catch { failures.append("ExternalArtifact: \(error)") }
            }
            if !nudged, let nudger {
                do {
                    let objects = try await nudger.nudge(source: record.source, token: token)
                    nudged = true
                    AgentMetrics.reconcileRequests.increment(by: objects.count)
                    logger.info("reconcile requested", metadata: ["ocirepositories": "\(objects)", "source": "\(record.source)"])
                } catch { failures.append("OCIRepository reconcile: \(error)") }
            }
            if !called, let receivers {
                do {
                    try await receivers.call(record)
                    called = true
                } catch { failures.append("Receiver: \(error)") }
            }
            if failures.isEmpty { return }
            let delay = backoff.next()
            logger.warning("telling Flux failed; retrying", metadata: [
                "source": "\(record.source)", "attempt": "\(attempt)", "in_ms": "\(delay.milliseconds)",
                "errors": "\(failures.joined(separator: "; "))"])
            if attempt < maxAttempts { try? await Task.sleep(for: delay) }
        }
        logger.error("gave up telling Flux about a publication; Flux will still find it at its next interval",
                     metadata: ["source": "\(record.source)", "revision": "\(record.revision)"])
    }
}
