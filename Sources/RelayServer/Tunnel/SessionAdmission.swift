import Foundation
import GRPCCore
import Metrics
import Synchronization

/// How many new sessions a second the relay takes on (`limits.sessionsPerSecond`), so a fleet
/// reconnecting at once (a relay restart, a network coming back) cannot starve the sessions
/// already up of the CPU their heartbeats need.
///
/// A token bucket (`rate` a second, `burst` at once) decides; a session beyond it is refused at
/// once (before any database work, with UNAVAILABLE) and told when to come back in
/// `grpc-retry-pushback-ms`, which relay-agent honours instead of its own backoff. Refused
/// agents are given successive slots at the admission rate (each slot a little jittered),
/// so they return spread out at exactly the rate the relay admits, instead of all again at
/// their next backoff step.
final class SessionAdmission: Sendable {
    enum Decision: Equatable {
        case admitted
        case refused(retryAfter: Duration)
    }

    let rate: Double
    let burst: Double
    /// The longest an agent is told to wait.
    static let maxRetryAfter: Duration = .seconds(300)

    private struct State {
        var tokens: Double
        var refilled: ContinuousClock.Instant
        /// The last slot given to a refused agent.
        var lastSlot: ContinuousClock.Instant
    }
    private let state: Mutex<State>

    init(sessionsPerSecond: Double, burst: Double? = nil) {
        rate = max(0.1, sessionsPerSecond)
        self.burst = max(1, burst ?? sessionsPerSecond)
        let now = ContinuousClock.now
        state = Mutex(State(tokens: max(1, burst ?? sessionsPerSecond), refilled: now, lastSlot: now))
    }

    func admit(at now: ContinuousClock.Instant = .now) -> Decision {
        let decision = state.withLock { state -> Decision in
            let elapsed = now - state.refilled
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            state.tokens = min(burst, state.tokens + max(0, seconds) * rate)
            state.refilled = now
            if state.tokens >= 1 {
                state.tokens -= 1
                return .admitted
            }
            // The next free slot after the ones already handed out (or after the bucket's own
            // refill, whichever is later).
            let interval = Duration.seconds(1 / rate)
            let refill = now + Duration.seconds((1 - state.tokens) / rate)
            let slot = min(max(state.lastSlot, refill) + interval, now + Self.maxRetryAfter)
            state.lastSlot = slot
            // Up to one slot later, so two agents given neighbouring slots do not collide.
            let wait = slot - now + Duration.seconds(Double.random(in: 0...(1 / rate)))
            return .refused(retryAfter: max(.milliseconds(50), wait))
        }
        if case .refused = decision { Self.refused.increment() } else { Self.admitted.increment() }
        return decision
    }

    /// The status a refused agent gets.
    func refusal(retryAfter: Duration) -> RPCError {
        let ms = retryAfter.milliseconds
        return RPCError(code: .unavailable,
                        message: "the relay is taking on \(Int(rate)) new sessions a second (limits.sessionsPerSecond) and is at that rate; "
                            + "reconnect in \(ms) ms",
                        metadata: ["grpc-retry-pushback-ms": "\(ms)", "relay-error": "admission"])
    }

    static let admitted = Counter(label: "relay_sessions_admitted_total")
    static let refused = Counter(label: "relay_sessions_refused_total")
}
