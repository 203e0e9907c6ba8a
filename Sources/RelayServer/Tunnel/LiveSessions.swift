import Dispatch
import Synchronization
import Wire

/// What wakes a session's loop: its agent's messages, and the relay-wide watchers.
enum SessionEvent: Sendable {
    case message(Relay_V1_AgentMessage)
    /// The agent's side of Connect ended.
    case closed
    /// The hub left an event in the session's mailbox.
    case hub
    /// Nothing heard from the agent for two heartbeat intervals.
    case silent
    /// The session's token no longer belongs to its agent.
    case revoked
    /// The agent's grants changed (an access file, `agents`): it reconnects to get them.
    case regranted
}

/// One live Connect stream as the relay-wide watchers see it: when its agent was last heard,
/// which token it stands on, and a mailbox for the hub. The hub never queues history here: a
/// newer desired state replaces an unsent one, and a drain is kept apart so nothing hides it.
final class LiveSession: Sendable {
    let agent: String
    /// The sources granted when the session opened (what its hub subscription covers).
    let sources: Set<String>
    let events: AsyncStream<SessionEvent>
    private let sink: AsyncStream<SessionEvent>.Continuation
    private let lastHeard: Atomic<UInt64>
    /// Its connection's clock (nil if the listener did not register one).
    private let connection: ConnectionClock?
    /// Set when the agent offered transport keepalive: the sweep then goes by the bytes its
    /// connection received (its PINGs included), not by its messages (`TunnelKeepalive`).
    private let watchedByTransport = Atomic<Bool>(false)
    private let tokenSHA256: Mutex<String>
    private let mailbox = Mutex(Mailbox())

    private struct Mailbox {
        var state: TunnelEvent?
        var drain: TunnelEvent?
    }

    init(agent: String, sources: Set<String> = [], tokenSHA256: String, connection: ConnectionClock?) {
        self.agent = agent
        self.sources = sources
        self.connection = connection
        self.tokenSHA256 = Mutex(tokenSHA256)
        lastHeard = Atomic(DispatchTime.now().uptimeNanoseconds)
        (events, sink) = AsyncStream.makeStream()
    }

    func yield(_ event: SessionEvent) { sink.yield(event) }
    func finish() { sink.finish() }

    func heard() { lastHeard.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }

    /// Watches the session by its connection's bytes from now on; false (and nothing changes)
    /// without a connection clock.
    func watchByTransport() -> Bool {
        guard connection != nil else { return false }
        watchedByTransport.store(true, ordering: .relaxed)
        return true
    }

    func silent(longerThan limit: UInt64, now: UInt64) -> Bool {
        let heard = watchedByTransport.load(ordering: .relaxed)
            ? connection?.lastReadNanoseconds ?? 0 : lastHeard.load(ordering: .relaxed)
        return now > heard && now - heard > limit
    }

    /// From the sweep: the session ends; a connection silent even at the transport (not one
    /// PING in two intervals) is closed as well.
    func silenced() {
        sink.yield(.silent)
        if watchedByTransport.load(ordering: .relaxed) { connection?.close() }
    }

    var token: String { tokenSHA256.withLock { $0 } }
    func switchToken(_ hash: String) { tokenSHA256.withLock { $0 = hash } }

    /// From the hub: kept in the mailbox, and the loop woken if the mailbox was empty.
    func deliver(_ event: TunnelEvent) {
        let wake = mailbox.withLock { mailbox -> Bool in
            let wasEmpty = mailbox.state == nil && mailbox.drain == nil
            if event.isDrain { mailbox.drain = event } else { mailbox.state = event }
            return wasEmpty
        }
        if wake { sink.yield(.hub) }
    }

    /// What the hub left, oldest kind first: the desired state, then a drain.
    func takeMail() -> [TunnelEvent] {
        mailbox.withLock { mailbox in
            defer { mailbox = Mailbox() }
            return [mailbox.state, mailbox.drain].compactMap { $0 }
        }
    }
}

/// Every live session of this relay, watched by two relay-wide loops instead of a timer and
/// a database query per connection: the dead-peer sweep (every half heartbeat interval, as a
/// per-session ticker did) and revocation (pushed by `AccessDirectory` when tokens change).
final class LiveSessions: Sendable {
    private let sessions = Mutex<[ObjectIdentifier: LiveSession]>([:])

    func open(agent: String, sources: Set<String> = [], tokenSHA256: String, connection: ConnectionClock?) -> LiveSession {
        let session = LiveSession(agent: agent, sources: sources, tokenSHA256: tokenSHA256, connection: connection)
        sessions.withLock { $0[ObjectIdentifier(session)] = session }
        return session
    }

    func close(_ session: LiveSession) {
        _ = sessions.withLock { $0.removeValue(forKey: ObjectIdentifier(session)) }
        session.finish()
    }

    /// Tells every session silent for longer than `limit` so.
    func sweep(silentLongerThan limit: Duration) {
        let nanos = UInt64(limit.components.seconds) * 1_000_000_000 + UInt64(limit.components.attoseconds / 1_000_000_000)
        let now = DispatchTime.now().uptimeNanoseconds
        let silent = sessions.withLock { $0.values.filter { $0.silent(longerThan: nanos, now: now) } }
        for session in silent { session.silenced() }
    }

    /// Tells every session whose token no longer names its agent that it was revoked.
    func revoke(notIn access: AccessSnapshot) {
        let all = sessions.withLock { Array($0.values) }
        for session in all {
            guard let identity = access.identities[session.token], identity.name == session.agent else {
                session.yield(.revoked)
                continue
            }
            if identity.sources != session.sources { session.yield(.regranted) }
        }
    }

    /// The dead-peer sweep, until cancelled.
    func watchHeartbeats(interval: Duration) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval / 2) } catch { return }
            sweep(silentLongerThan: interval * 2)
        }
    }
}
