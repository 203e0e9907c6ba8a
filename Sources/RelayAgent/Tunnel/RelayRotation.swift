import RelayShared

/// Which configured relay the next session dials (`relays` in agent.yaml). An agent starts at
/// a relay of its own random pick, so a fleet configured with the same list spreads over the
/// replicas, and moves to the next one in the list when a session fails or a relay drains
/// without naming another: any replica serves any agent. With one relay it always dials that
/// one. A drain's redirect is followed once; if the relay named there cannot be reached, the
/// next session goes back to the configured relay it came from.
struct RelayRotation: Sendable {
    let relays: [HostPort]
    private var index: Int
    /// A relay named by a drain, dialled instead of `relays[index]` until a session there fails.
    private var redirect: HostPort?

    init(relays: [HostPort], start: Int? = nil) {
        precondition(!relays.isEmpty, "an online agent has at least one relay")
        self.relays = relays
        index = (start ?? Int.random(in: 0..<relays.count)) % relays.count
    }

    /// Where the next session goes.
    var target: HostPort { redirect ?? relays[index] }

    /// Whether the next session goes where a drain sent it.
    var isRedirected: Bool { redirect != nil }

    /// After a drain: to the relay it names, else to the next configured relay (a draining
    /// relay is going away; one refusing new sessions is busy). Returns whether the relay changed.
    @discardableResult
    mutating func drained(redirect named: HostPort?) -> Bool {
        let before = target
        if let named {
            if let configured = relays.firstIndex(of: named) {
                index = configured
                redirect = nil
            } else {
                redirect = named
            }
        } else {
            redirect = nil
            advance()
        }
        return target != before
    }

    /// After a failed session. A redirect that failed before its Welcome sends the agent back to
    /// the configured relay it came from; otherwise the next configured relay is tried. Returns
    /// whether the relay changed.
    @discardableResult
    mutating func failed(welcomed: Bool) -> Bool {
        let before = target
        if redirect != nil {
            if !welcomed { redirect = nil }
        } else {
            advance()
        }
        return target != before
    }

    private mutating func advance() { index = (index + 1) % relays.count }
}
