import GRPCCore
import Metrics
import Synchronization

/// Admission of Fetch streams, per agent and relay-wide.
///
/// - Per agent: at most `limits.maxConcurrentFetches` Fetches streaming or waiting; one more
///   is refused at once.
/// - Relay-wide: at most `limits.maxFetchStreams` Fetch bodies stream at once, so the chunks
///   Fetch bodies have read and not yet handed to gRPC are bounded by
///   `maxFetchStreams × maxChunkBytes` (each body holds one chunk at a time; what a connection's
///   HTTP/2 and TLS layers still buffer after the hand-over is theirs). Beyond that, up to `limits.maxQueuedFetches` wait in one FIFO
///   queue across all agents (an agent's waiters count toward its own limit, so the head of the
///   queue is always admissible). A full queue refuses at once with `resourceExhausted` and the
///   metadata `grpc-retry-pushback-ms`: the estimated wait for a slot (queue length over the
///   recent completion rate) clamped to 1…48 s, plus up to 25 % jitter so refused agents do not
///   come back together (at most 60 s). A waiter waits as long as the queue ahead of it takes;
///   that wait is bounded by the queue's length, not by a timer.
///
/// A slot is taken inside a Fetch's response body and given back by `defer` there, so every way
/// a Fetch ends returns it: done, an error, the client cancelling (a waiter leaves the queue),
/// or gRPC never running the body because the client was gone first.
final class FetchLimiter: Sendable {
    /// The relay's configured limits (the same on every call of one relay).
    struct Limits: Sendable {
        var perAgent: Int
        var streams: Int
        var queued: Int
    }

    private struct Waiter {
        let id: UInt64
        let agent: String
        let since: ContinuousClock.Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        /// Per agent: streaming plus waiting.
        var held: [String: Int] = [:]
        var streaming = 0
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
        /// When the most recent streams ended, oldest first (for the completion rate).
        var completions: [ContinuousClock.Instant] = []

        mutating func publish() {
            RelayMetrics.fetchStreamsActive.record(streaming)
            RelayMetrics.fetchQueueDepth.record(waiters.count)
        }
    }

    private let state = Mutex(State())
    private static let rateWindow = 64

    /// The refusal a Fetch of `agent` would get now, if any (counted); answered before any
    /// response is sent. Takes nothing: the slot itself is taken by `admit` in the body.
    func refusal(_ agent: String, limits: Limits) -> RPCError? {
        let refusal = state.withLock { Self.refusal(agent, limits: limits, state: $0) }
        if refusal != nil { RelayMetrics.fetchesRefused.increment() }
        return refusal
    }

    /// Takes a slot for `agent`, waiting in the queue for one when all `limits.streams` are
    /// busy. Throws the refusal (full queue, or the agent at its own limit), or
    /// `CancellationError` when the caller is cancelled while waiting (its place is given up).
    /// Every normal return must be matched by one `release`.
    func admit(_ agent: String, limits: Limits) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        let since = ContinuousClock.now
        enum Outcome { case admitted, queued, refused(RPCError), cancelled }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Decided and queued under one lock: a release in between cannot miss this waiter.
                let outcome: Outcome = state.withLock { state in
                    if Task.isCancelled { return .cancelled }
                    if let refusal = Self.refusal(agent, limits: limits, state: state) { return .refused(refusal) }
                    state.held[agent, default: 0] += 1
                    defer { state.publish() }
                    if state.streaming < limits.streams && state.waiters.isEmpty {
                        state.streaming += 1
                        return .admitted
                    }
                    state.waiters.append(Waiter(id: id, agent: agent, since: since, continuation: continuation))
                    return .queued
                }
                switch outcome {
                case .admitted:
                    RelayMetrics.fetchQueueWait.recordNanoseconds(0)
                    continuation.resume()
                case .queued:
                    break
                case .refused(let error):
                    RelayMetrics.fetchesRefused.increment()
                    continuation.resume(throwing: error)
                case .cancelled:
                    continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let waiter: Waiter? = state.withLock { state in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                let waiter = state.waiters.remove(at: index)
                Self.drop(agent, from: &state)
                state.publish()
                return waiter
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Gives back the slot `admit` took; the longest waiter (if any) takes it.
    func release(_ agent: String, limits: Limits) {
        let next: Waiter? = state.withLock { state in
            Self.drop(agent, from: &state)
            state.streaming -= 1
            state.completions.append(.now)
            if state.completions.count > Self.rateWindow { state.completions.removeFirst(state.completions.count - Self.rateWindow) }
            var next: Waiter?
            if state.streaming < limits.streams, !state.waiters.isEmpty {
                next = state.waiters.removeFirst()
                state.streaming += 1
            }
            state.publish()
            return next
        }
        if let next {
            let waited = ContinuousClock.now - next.since
            RelayMetrics.fetchQueueWait.recordNanoseconds(waited.components.seconds * 1_000_000_000 + waited.components.attoseconds / 1_000_000_000)
            next.continuation.resume()
        }
    }

    /// Fetches of `agent` streaming or waiting.
    func inUse(_ agent: String) -> Int { state.withLock { $0.held[agent, default: 0] } }
    /// Fetch bodies streaming now, relay-wide.
    var streaming: Int { state.withLock { $0.streaming } }
    /// Fetches waiting for a slot.
    var queued: Int { state.withLock { $0.waiters.count } }

    private static func drop(_ agent: String, from state: inout State) {
        let count = state.held[agent, default: 1] - 1
        state.held[agent] = count > 0 ? count : nil
    }

    private static func refusal(_ agent: String, limits: Limits, state: State) -> RPCError? {
        if state.held[agent, default: 0] >= limits.perAgent {
            return RPCError(code: .resourceExhausted,
                            message: "agent \(agent) already has \(limits.perAgent) fetches running (limits.maxConcurrentFetches)",
                            metadata: pushback(milliseconds: 1000))
        }
        let busy = state.streaming >= limits.streams || !state.waiters.isEmpty
        guard busy, state.waiters.count >= limits.queued else { return nil }
        return RPCError(code: .resourceExhausted,
                        message: "the relay is streaming \(limits.streams) fetches (limits.maxFetchStreams) and "
                            + "\(state.waiters.count) wait (limits.maxQueuedFetches); retry after grpc-retry-pushback-ms, "
                            + "or raise limits.maxFetchStreams / limits.maxQueuedFetches in the relay's config",
                        metadata: pushback(milliseconds: estimatedWait(state: state, limits: limits)))
    }

    /// Milliseconds until a slot is likely free for a newcomer: the queue ahead of it over the
    /// recent completion rate (without history: one second per stream), clamped to 1…48 s.
    static func estimatedWait(waiting: Int, completions: [ContinuousClock.Instant], streams: Int) -> Int {
        var perSecond = Double(max(1, streams))
        if completions.count >= 2, let first = completions.first, let last = completions.last {
            let span = last - first
            let seconds = Double(span.components.seconds) + Double(span.components.attoseconds) / 1e18
            if seconds > 0 { perSecond = Double(completions.count - 1) / seconds }
        }
        let estimate = Double(waiting + 1) / perSecond * 1000
        return Int(min(48_000, max(1000, estimate)))
    }

    private static func estimatedWait(state: State, limits: Limits) -> Int {
        estimatedWait(waiting: state.waiters.count, completions: state.completions, streams: limits.streams)
    }

    /// `grpc-retry-pushback-ms` with up to 25 % jitter added.
    private static func pushback(milliseconds: Int) -> Metadata {
        let jittered = milliseconds + Int.random(in: 0...(milliseconds / 4))
        return ["grpc-retry-pushback-ms": "\(min(60_000, jittered))"]
    }
}

extension RelayMetrics {
    /// Fetch bodies streaming now (at most `limits.maxFetchStreams`).
    static let fetchStreamsActive = Gauge(label: "relay_fetch_streams_active")
    /// Fetches waiting for a stream slot (at most `limits.maxQueuedFetches`).
    static let fetchQueueDepth = Gauge(label: "relay_fetch_queue_depth")
    /// Fetches refused with `resourceExhausted` and a retry pushback.
    static let fetchesRefused = Counter(label: "relay_fetch_refused_total")
    /// From a Fetch asking for a slot to getting one.
    static let fetchQueueWait = Timer(label: "relay_fetch_queue_wait_seconds")
}
