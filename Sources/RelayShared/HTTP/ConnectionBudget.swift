import Metrics
import NIOCore
import Synchronization

/// The connection cap of one HTTP listener, shared by its connections on every event loop.
///
/// Hand-written rather than Hummingbird's `MaximumAvailableConnections`: that one stops
/// *accepting* at the cap, so further clients wait silently in the kernel's backlog (health
/// probes included) and nothing counts them. Here every connection is accepted. While there is
/// room it is served; at the cap, the connection that has waited longest for a request (an
/// idle keep-alive, or one still sending its headers) is closed to make room, so a flood of
/// idle connections cannot lock out probes, webhooks or Flux; only when every connection is
/// busy with a request is the newcomer refused at once.
public final class ConnectionBudget: Sendable {
    public enum Admission {
        case admitted
        /// Admitted once this idle connection is closed.
        case evicting(any Channel)
        /// Every slot is busy with a request.
        case refused
    }

    private struct Slot {
        let channel: any Channel
        /// When the connection last became idle (a tick), or nil while a request is in progress.
        var idleSince: UInt64?
    }

    private struct State {
        var slots: [ObjectIdentifier: Slot] = [:]
        var tick: UInt64 = 0
    }

    public let capacity: Int
    let metrics: HTTPListenerMetrics
    private let state = Mutex(State())

    public init(capacity: Int, metricsPrefix: String) {
        self.capacity = capacity
        metrics = HTTPListenerMetrics(prefix: metricsPrefix)
    }

    /// A new connection, idle until its first request head arrives.
    func admit(_ channel: any Channel) -> Admission {
        let (admission, open) = state.withLock { state -> (Admission, Int) in
            state.tick += 1
            var admission = Admission.admitted
            if state.slots.count >= capacity {
                var oldest: (key: ObjectIdentifier, since: UInt64)?
                for (key, slot) in state.slots {
                    if let since = slot.idleSince, since < oldest?.since ?? .max { oldest = (key, since) }
                }
                guard let oldest, let victim = state.slots.removeValue(forKey: oldest.key) else {
                    return (.refused, state.slots.count)
                }
                admission = .evicting(victim.channel)
            }
            state.slots[ObjectIdentifier(channel)] = Slot(channel: channel, idleSince: state.tick)
            return (admission, state.slots.count)
        }
        metrics.open.record(open)
        switch admission {
        case .admitted: break
        case .evicting: metrics.evicted.increment()
        case .refused: metrics.refused.increment()
        }
        return admission
    }

    /// Whether a connection waits for a request (evictable) or has one in progress.
    func setIdle(_ channel: any Channel, _ idle: Bool) {
        state.withLock { state in
            let key = ObjectIdentifier(channel)
            guard state.slots[key] != nil else { return }
            state.tick += 1
            state.slots[key]?.idleSince = idle ? state.tick : nil
        }
    }

    /// A connection closed (nothing to do if it was evicted).
    func release(_ channel: any Channel) {
        let open = state.withLock { state in
            state.slots.removeValue(forKey: ObjectIdentifier(channel))
            return state.slots.count
        }
        metrics.open.record(open)
    }
}

/// `<prefix>_http_…` metrics of one listener (`relay_http_…`, `relay_agent_http_…`).
struct HTTPListenerMetrics: Sendable {
    let open: Gauge
    /// New connections answered 503 (or closed, on HTTPS) because every slot was busy.
    let refused: Counter
    /// Idle connections closed to make room for a new one.
    let evicted: Counter
    /// Connections closed because a request head did not arrive within the header timeout.
    let headerTimeouts: Counter

    init(prefix: String) {
        open = Gauge(label: "\(prefix)_http_connections_open")
        refused = Counter(label: "\(prefix)_http_connections_refused_total")
        evicted = Counter(label: "\(prefix)_http_connections_evicted_total")
        headerTimeouts = Counter(label: "\(prefix)_http_header_timeouts_total")
    }
}
