import Metrics
import Synchronization

/// Artifact bytes the relay has handed to its connections and the kernel has not taken yet,
/// relay-wide, with a ceiling (`limits.maxFetchBytesInFlight`) that Fetch bodies wait for
/// before reading their next chunk.
///
/// A Fetch body's `write` returns as soon as gRPC has the chunk, long before it leaves: the
/// serialized chunk then waits in the connection's HTTP/2 stream until the agent reads (heaptrack,
/// 2,000 agents fetching 1 MiB: 1.44 GB of serialized FetchChunks alive at the peak, while the
/// Fetch slots had long been given back). So a chunk is counted per connection when the body
/// writes it (`reserve`, keyed by `ConnectionKey`) and counted out when the socket has
/// taken it (`TLSBufferBounds`, `sent`) or the connection closed (`closed`): the ceiling holds
/// whatever the agents' read speed. What can be in flight: the ceiling, plus one chunk per
/// streaming Fetch body (`maxFetchStreams × maxChunkBytes`) that passed the check together.
final class OutboundBytes: Sendable {
    let limit: Int

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, Never>
    }
    private struct State {
        var inFlight = 0
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
        /// Per open connection (`ConnectionKey`): bytes reserved and not yet sent.
        var connections: [String: Int] = [:]
    }
    private let state = Mutex(State())

    init(limit: Int) { self.limit = max(1, limit) }

    var inFlight: Int { state.withLock { $0.inFlight } }

    /// A connection opened (its TLS handler is in place).
    func opened(_ peer: String) { state.withLock { $0.connections[peer] = 0 } }

    /// A connection closed: whatever it still held is no longer in flight.
    func closed(_ peer: String) {
        release { $0.connections.removeValue(forKey: peer) ?? 0 }
    }

    /// A Fetch body hands `bytes` to gRPC on `peer`'s connection (nothing when the connection
    /// is already gone).
    func reserve(_ bytes: Int, peer: String) {
        let now: Int? = state.withLock { state in
            guard state.connections[peer] != nil else { return nil }
            state.connections[peer, default: 0] += bytes
            state.inFlight += bytes
            return state.inFlight
        }
        if let now { Self.gauge.record(now) }
    }

    /// `peer`'s socket took `bytes` of a large write (framing makes that a little more than
    /// what was reserved: never more than the connection holds is counted out).
    func sent(_ bytes: Int, peer: String) {
        release { state in
            guard let held = state.connections[peer] else { return 0 }
            let released = min(held, bytes)
            state.connections[peer] = held - released
            return released
        }
    }

    /// Counts out what `take` takes from a connection, in the same critical section (this runs
    /// for every 16 KB slice a Fetch writes), and wakes the waiters once there is room.
    private func release(_ take: (inout State) -> Int) {
        let released: (now: Int, ready: [Waiter])? = state.withLock { state in
            let bytes = take(&state)
            guard bytes > 0 else { return nil }
            state.inFlight -= bytes
            guard state.inFlight < limit, !state.waiters.isEmpty else { return (state.inFlight, []) }
            defer { state.waiters.removeAll() }
            return (state.inFlight, state.waiters)
        }
        guard let released else { return }
        Self.gauge.record(released.now)
        for waiter in released.ready { waiter.continuation.resume() }
    }

    /// Returns once the bytes in flight are below the ceiling (at once when they are, or when
    /// the caller is cancelled).
    func waitForRoom() async {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let wait = state.withLock { state -> Bool in
                    guard state.inFlight >= limit, !Task.isCancelled else { return false }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return true
                }
                if wait { Self.waits.increment() } else { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume()
        }
    }

    static let gauge = Gauge(label: "relay_fetch_bytes_in_flight")
    static let waits = Counter(label: "relay_fetch_bytes_in_flight_waits_total")
}
