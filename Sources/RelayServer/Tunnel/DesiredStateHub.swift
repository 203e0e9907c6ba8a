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
        /// Hands an event to the session (its mailbox keeps only the newest state).
        var deliver: @Sendable (TunnelEvent) -> Void
        /// Told to go away because a newer session of its agent took over.
        var superseded = false
    }

    private var latest: [String: PackagedArtifact]
    /// Sources under rollout rules (waves, freezes): their agents get what `assignments`
    /// says, set by the `RolloutController`, never simply the newest.
    private let governed: Set<String>
    /// Per governed source, per agent: the artifact it is given (absent: none yet; an agent
    /// keeps serving what it holds when a desired state does not name a source).
    private var assignments: [String: [String: PackagedArtifact]] = [:]
    private var generation: UInt64
    private var subscribers: [UUID: Subscriber] = [:]
    private var draining: (delay: Duration, spread: Duration, reason: String, redirect: String)?
    /// When sessions of each agent were superseded lately (see `claim`).
    private var supersessions: [String: [ContinuousClock.Instant]] = [:]
    /// The first delay a superseded session is given; it doubles with each supersession of
    /// the same agent within `supersessionMemory`, up to `maxSupersededDelay`.
    private let supersededDelay: Duration
    static let supersessionMemory: Duration = .seconds(600)
    static let maxSupersededDelay: Duration = .seconds(300)

    public init(initial: [String: PackagedArtifact] = [:], supersededDelay: Duration = .seconds(2), governed: Set<String> = []) {
        latest = initial
        self.governed = governed
        // Generations only need to increase within one relay process; agents compare them
        // per connection.
        generation = 1
        self.supersededDelay = supersededDelay
    }

    /// Records a packaged artifact; returns whether it changed the source's latest revision.
    @discardableResult
    public func publish(_ artifact: PackagedArtifact) -> Bool {
        if let current = latest[artifact.source], current.digest == artifact.digest, current.revision == artifact.revision {
            return false
        }
        latest[artifact.source] = artifact
        generation += 1
        // A governed source's agents hear of it through `assign`.
        guard !governed.contains(artifact.source) else { return true }
        for subscriber in subscribers.values where subscriber.sources.contains(artifact.source) {
            subscriber.deliver(snapshot(for: subscriber))
        }
        return true
    }

    /// Sets what each agent of a governed source is given; agents whose artifact changed are
    /// sent their new desired state.
    public func assign(source: String, _ perAgent: [String: PackagedArtifact]) {
        let before = assignments[source] ?? [:]
        guard before != perAgent else { return }
        assignments[source] = perAgent
        let changed = Set(before.keys).union(perAgent.keys).filter { before[$0] != perAgent[$0] }
        generation += 1
        for subscriber in subscribers.values where subscriber.sources.contains(source) && changed.contains(subscriber.agent) {
            subscriber.deliver(snapshot(for: subscriber))
        }
    }

    /// `publish`, unless the source's current artifact was packaged later (another path
    /// published a newer revision while this one was being prepared).
    @discardableResult
    public func publishUnlessOlder(_ artifact: PackagedArtifact) -> Bool {
        if let current = latest[artifact.source], current.createdAt > artifact.createdAt { return false }
        return publish(artifact)
    }

    public func artifact(forSource source: String) -> PackagedArtifact? { latest[source] }

    public var connectedAgents: [String] { subscribers.values.map(\.agent).sorted() }

    /// Subscribes `deliver` to the events for `sources`, starting with the current desired
    /// state (or the drain, while draining).
    public func subscribe(agent: String, sources: Set<String>, deliver: @escaping @Sendable (TunnelEvent) -> Void) -> UUID {
        let id = UUID()
        let subscriber = Subscriber(agent: agent, sources: sources, deliver: deliver)
        subscribers[id] = subscriber
        if let draining {
            deliver(.drain(retryAfter: Self.spread(draining.delay, over: draining.spread), reason: draining.reason,
                           redirect: draining.redirect))
        } else {
            deliver(snapshot(for: subscriber))
        }
        return id
    }

    public func unsubscribe(_ id: UUID) {
        subscribers.removeValue(forKey: id)
    }

    /// One session per agent, the newest wins: called when a session's Hello is accepted, it
    /// drains every other session of the same agent (an agent that reconnected leaves its old
    /// connection behind; two processes sharing a token would otherwise both be served). The
    /// drained session is told to come back after a delay that doubles with every take-over
    /// of that agent in the last 10 minutes (up to 5 minutes, jittered), so two processes on
    /// one token take turns less and less often instead of flapping. Returns how many
    /// sessions were drained.
    public func claim(_ id: UUID) -> Int {
        // A session drained meanwhile (a newer one's Hello came first) takes nobody's place.
        guard let claimant = subscribers[id], !claimant.superseded else { return 0 }
        let agent = claimant.agent
        let others = subscribers.filter { $0.key != id && $0.value.agent == agent && !$0.value.superseded }
        guard !others.isEmpty else { return 0 }
        let now = ContinuousClock.now
        var recent = (supersessions[agent] ?? []).filter { now - $0 < Self.supersessionMemory }
        for (otherID, other) in others {
            let delay = min(supersededDelay * Double(1 << min(recent.count, 16)), Self.maxSupersededDelay)
            recent.append(now)
            subscribers[otherID]?.superseded = true
            other.deliver(.drain(
                retryAfter: Self.jittered(delay),
                reason: "another session for agent \(agent) started; this one is closed. If two agents share this token, "
                    + "give each its own (relay.yaml agents[], or relay-server agents create)",
                redirect: ""))
        }
        supersessions[agent] = recent
        return others.count
    }

    /// Tells every connected agent to reconnect after `retryAfter` plus its own share of
    /// `spread` (uniform), and every later one too. The relay passes a spread as long as its
    /// admission rate needs to take the whole fleet back, so a restart does not bring the
    /// fleet back at once (a crash leaves that to the agents' backoff and the admission
    /// control; a graceful restart must not be slower). `spread` below `retryAfter` is raised
    /// to it (the old rule: between the delay and twice the delay).
    public func drain(retryAfter: Duration, spread: Duration = .zero, reason: String, redirect: String = "") {
        let spread = max(spread, retryAfter)
        draining = (retryAfter, spread, reason, redirect)
        for subscriber in subscribers.values {
            subscriber.deliver(.drain(retryAfter: Self.spread(retryAfter, over: spread), reason: reason, redirect: redirect))
        }
    }

    public var subscriberCount: Int { subscribers.count }

    private func snapshot(for subscriber: Subscriber) -> TunnelEvent {
        .desiredState(generation: generation, artifacts: subscriber.sources.sorted().compactMap { source in
            governed.contains(source) ? assignments[source]?[subscriber.agent] : latest[source]
        })
    }

    /// Uniform in [delay, delay + spread].
    static func spread(_ delay: Duration, over spread: Duration) -> Duration {
        let ms = max(1, delay.milliseconds)
        return .milliseconds(ms + Int64.random(in: 0...max(0, spread.milliseconds)))
    }

    /// Between the delay and twice the delay.
    static func jittered(_ delay: Duration) -> Duration { spread(delay, over: delay) }
}

/// An artifact as a DesiredState offered it: what an Ack may name.
struct OfferedArtifact: Hashable, Sendable {
    var source: String
    var revision: String
    var digest: String
}

extension OfferedArtifact {
    init(_ artifact: PackagedArtifact) {
        self.init(source: artifact.source, revision: artifact.revision, digest: artifact.digest)
    }
}

extension TunnelEvent {
    var isDrain: Bool { if case .drain = self { true } else { false } }
}
