import Foundation

/// What a connected agent's stream is told.
public enum TunnelEvent: Sendable, Equatable {
    /// Everything the agent should hold now.
    case desiredState(generation: UInt64, artifacts: [PackagedArtifact])
    /// Go away and come back after this long.
    case drain(retryAfter: Duration, reason: String, redirect: String)
}

/// The latest artifact of every source, and the agents listening for changes.
///
/// A new revision reaches every connected agent granted its source the moment it is
/// published: each subscriber's stream keeps only the newest state (an agent that is slow
/// to read never makes the hub buffer history).
public actor DesiredStateHub {
    private struct Subscriber {
        var agent: String
        var sources: Set<String>
        var continuation: AsyncStream<TunnelEvent>.Continuation
    }

    private var latest: [String: PackagedArtifact]
    private var generation: UInt64
    private var subscribers: [UUID: Subscriber] = [:]
    private var draining: (Duration, String, String)?

    public init(initial: [String: PackagedArtifact] = [:]) {
        latest = initial
        // Generations only need to increase within one relay process; agents compare them
        // per connection.
        generation = 1
    }

    /// Records a packaged artifact; returns whether it changed the source's latest revision.
    @discardableResult
    public func publish(_ artifact: PackagedArtifact) -> Bool {
        if let current = latest[artifact.source], current.digest == artifact.digest, current.revision == artifact.revision {
            return false
        }
        latest[artifact.source] = artifact
        generation += 1
        for subscriber in subscribers.values where subscriber.sources.contains(artifact.source) {
            subscriber.continuation.yield(snapshot(for: subscriber.sources))
        }
        return true
    }

    public func artifact(forSource source: String) -> PackagedArtifact? { latest[source] }

    public var connectedAgents: [String] { subscribers.values.map(\.agent).sorted() }

    /// A stream that starts with the current desired state for `sources`.
    public func subscribe(agent: String, sources: Set<String>) -> (UUID, AsyncStream<TunnelEvent>) {
        let (stream, continuation) = AsyncStream<TunnelEvent>.makeStream(bufferingPolicy: .bufferingNewest(4))
        let id = UUID()
        subscribers[id] = Subscriber(agent: agent, sources: sources, continuation: continuation)
        if let (delay, reason, redirect) = draining {
            continuation.yield(.drain(retryAfter: Self.jittered(delay), reason: reason, redirect: redirect))
        } else {
            continuation.yield(snapshot(for: sources))
        }
        return (id, stream)
    }

    public func unsubscribe(_ id: UUID) {
        subscribers.removeValue(forKey: id)?.continuation.finish()
    }

    /// Tells every connected agent to reconnect after `retryAfter` (each with its own
    /// jitter, so a restart does not bring them all back at once), and every later one too.
    public func drain(retryAfter: Duration, reason: String, redirect: String = "") {
        draining = (retryAfter, reason, redirect)
        for subscriber in subscribers.values {
            subscriber.continuation.yield(.drain(retryAfter: Self.jittered(retryAfter), reason: reason, redirect: redirect))
        }
    }

    private func snapshot(for sources: Set<String>) -> TunnelEvent {
        .desiredState(generation: generation,
                      artifacts: sources.sorted().compactMap { latest[$0] })
    }

    /// Between the delay and twice the delay.
    static func jittered(_ delay: Duration) -> Duration {
        let ms = max(1, delay.components.seconds * 1000 + delay.components.attoseconds / 1_000_000_000_000_000)
        return .milliseconds(ms + Int64.random(in: 0...ms))
    }
}
