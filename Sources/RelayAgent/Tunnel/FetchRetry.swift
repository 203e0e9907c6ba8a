import ArtifactMirror
import GRPCCore
import Logging
import Metrics
import Synchronization
import Wire

/// The desired state one session works toward, handed to its reconcile loop: each new one
/// from the relay, and the latest again when the store needs another pass (a fetch to retry,
/// an artifact quarantined). Only the newest waits; passes never pile up.
final class DesiredStates: Sendable {
    let stream: AsyncStream<Relay_V1_DesiredState>
    private let continuation: AsyncStream<Relay_V1_DesiredState>.Continuation
    private let latest = Mutex<Relay_V1_DesiredState?>(nil)

    init() {
        (stream, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func received(_ desired: Relay_V1_DesiredState) {
        latest.withLock { $0 = desired }
        continuation.yield(desired)
    }

    /// Another pass over the latest desired state (nothing before the first one arrived).
    func again() {
        if let desired = latest.withLock({ $0 }) { continuation.yield(desired) }
    }

    func finish() { continuation.finish() }
}

/// Fetches that failed: counted (`relay_agent_fetch_failures_total`), logged each time, and
/// reported to the relay (event reason `FetchFailed`) once per artifact and cause until the
/// artifact arrives, so a retry loop does not flood the timeline.
final class FetchFailures: Sendable {
    private let reported = Mutex<[String: String]>([:])  // digest → code last reported

    func failed(_ artifact: Relay_V1_Artifact, error: any Error, retryIn delay: Duration, incidents: AgentIncidents) {
        let code = Self.code(error)
        let transient = code == "unavailable" || code == "cancelled"
        let first = reported.withLock { reported in
            defer { reported[artifact.digest] = code }
            return reported[artifact.digest] != code
        }
        let message: String
        let reason: String
        if let refusal = error as? SignatureFailure {
            // Not published (trust.relayPublicKeys): counted apart from fetch failures.
            RelaySignatureCheck.countRefusal(refusal)
            reason = "SignatureRefused"
            message = "refused \(artifact.source) \(artifact.revision): \(refusal); nothing was published; checking again in \(delay.milliseconds) ms"
        } else {
            AgentMetrics.fetchFailures.increment()
            reason = "FetchFailed"
            message = "fetching \(artifact.source) \(artifact.revision) failed: \(error); retrying in \(delay.milliseconds) ms"
        }
        if first && !transient {
            incidents.report(code: code, reason: reason, source: artifact.source, revision: artifact.revision,
                             digest: artifact.digest, message: message)
        } else {
            incidents.logger.warning("\(message)", metadata: ["code": "\(code)", "digest": "\(artifact.digest)"])
        }
    }

    func succeeded(_ digest: String) {
        _ = reported.withLock { $0.removeValue(forKey: digest) }
    }

    /// A stable code for an error: FetchError's own, the gRPC status, or the store's.
    static func code(_ error: any Error) -> String {
        switch error {
        case let error as FetchError: error.code
        case let error as SignatureFailure: error.code
        case let error as RPCError: "\(error.code)"
        case is ArtifactMirrorError: "storage"
        default: "error"
        }
    }
}

/// A fetch the relay refused for now (its Fetch streams or queue are full) with a retry hint,
/// `grpc-retry-pushback-ms`: the next attempt waits that long instead of the backoff, and it
/// is not a failure (counted in `relay_agent_fetch_deferred_total`, logged at info).
enum FetchPushback {
    /// The relay's retry hint carried by `error`, if any.
    static func delay(of error: any Error) -> Duration? {
        guard let error = error as? RPCError, error.code == .resourceExhausted else { return nil }
        return RetryPushback.delay(of: error)
    }

    static func deferred(_ artifact: Relay_V1_Artifact, retryIn delay: Duration, logger: Logger) {
        AgentMetrics.fetchDeferred.increment()
        logger.info("the relay deferred this fetch; fetching again after its retry hint", metadata: [
            "source": "\(artifact.source)", "revision": "\(artifact.revision)", "digest": "\(artifact.digest)",
            "retryInMs": "\(delay.milliseconds)"])
    }
}

extension AgentMetrics {
    /// Fetches the relay refused for now with a retry hint (not failures).
    static let fetchDeferred = Counter(label: "relay_agent_fetch_deferred_total")
}
