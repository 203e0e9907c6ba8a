import Foundation
import ServiceLifecycle
import Synchronization

/// Fans newly stored status records out to live readers (the server-sent-event stream, the
/// web page, the notifiers). Each subscriber has a buffer bounded in entries and bytes: a
/// reader too slow to keep up is cut off (its subscription ends and its buffer is let go) and
/// resumes from the database after its last feed id, so nothing is lost, the tunnel never
/// waits for a reader and a stalled reader holds no more than its bound. Subscribers share
/// the records they buffer, so many readers behind by the same entries cost them once.
public final class StatusFeed: Sendable {
    /// What one subscriber may hold before it is cut off.
    public struct Limits: Sendable {
        public var entries = 10_000
        public var bytes = 8 << 20
        public init(entries: Int = 10_000, bytes: Int = 8 << 20) {
            self.entries = entries
            self.bytes = bytes
        }
    }

    private let subscribers = Mutex<[UInt64: StatusSubscription]>([:])
    private let nextID = Atomic<UInt64>(0)
    let limits: Limits
    /// The highest feed id handed to subscribers (nil until known): records are handed out in
    /// id order, each once.
    private let published = Mutex<Int64?>(nil)
    /// Wakes `follow(_:)` (set while it runs).
    private let catchUp = Mutex<AsyncStream<Void>.Continuation?>(nil)

    /// `after`: the newest feed id stored when the relay starts (what `follow(_:)` hands out
    /// comes after it).
    public init(limits: Limits = Limits(), after: Int64? = nil) {
        self.limits = limits
        published.withLock { $0 = after }
    }

    /// Newly stored records, in order, until the subscriber falls `limits` behind.
    public func subscribe() -> StatusSubscription {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let subscription = StatusSubscription(limits: limits) { [weak self] in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = subscription }
        return subscription
    }

    /// Hands newly stored records to the subscribers. Records already handed out are
    /// skipped. While `follow(_:)` runs, records that do not follow the last one handed out
    /// (another session or process stored rows in between) are left to it: it reads the rows
    /// from the database and hands them all out in id order.
    public func publish(_ records: [StatusRecord]) {
        guard !records.isEmpty else { return }
        publish(records.map(FeedEntry.init), complete: false)
    }

    /// `complete`: `entries` are every stored row after the last one handed out (read from
    /// the database), so a hole in their ids is real.
    private func publish(_ entries: [FeedEntry], complete: Bool) {
        let gap = published.withLock { last -> Bool in
            let fresh = last.map { last in entries.filter { $0.id > last } } ?? entries
            guard let first = fresh.first else { return false }
            if !complete, let last, first.id != last + 1, catchUp.withLock({ $0 != nil }) { return true }
            // Handed out under the lock: concurrent publishers cannot interleave out of order.
            for subscription in subscribers.withLock({ Array($0.values) }) {
                subscription.offer(fresh)
            }
            last = fresh.last!.id
            return false
        }
        if gap { _ = catchUp.withLock { $0?.yield() } }
    }

    /// Makes `follow(_:)` read the database now (another replica stored status).
    public func poke() { _ = catchUp.withLock { $0?.yield() } }

    /// Whether `follow(_:)` runs.
    var isFollowing: Bool { catchUp.withLock { $0 != nil } }

    /// Publishes what other writers store: `relay-server bundle import` runs in another
    /// process, and its rows reach the live readers (stream, page) through this. Polls the
    /// newest feed id every `interval`, and at once when `publish` saw rows out of order.
    /// Runs until cancelled.
    public func follow(_ registry: Registry, interval: Duration = .seconds(1)) async {
        let (wake, poke) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        catchUp.withLock { $0 = poke }
        defer { catchUp.withLock { $0 = nil } }
        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    poke.yield()
                }
                poke.finish()
            }
            for await _ in wake {
                do {
                    if published.withLock({ $0 }) == nil {
                        // What was stored before the relay started is not live: readers read it from the database.
                        let latest = try await registry.latestStatusID()
                        published.withLock { if $0 == nil { $0 = latest } }
                    }
                    while let since = published.withLock({ $0 }) {
                        let rows = try await registry.feedEntries(after: since, limit: 1000)
                        guard !rows.isEmpty else { break }
                        publish(rows, complete: true)
                        if rows.count < 1000 { break }
                    }
                } catch {
                    continue  // the database is busy or failing: the next tick tries again
                }
            }
            group.cancelAll()
        }
    }
}

/// Runs `StatusFeed.follow` until the relay stops.
public struct StatusFeedFollower: Service {
    let feed: StatusFeed
    let registry: Registry
    public init(feed: StatusFeed, registry: Registry) {
        self.feed = feed
        self.registry = registry
    }
    public func run() async throws {
        await cancelWhenGracefulShutdown { await feed.follow(registry) }
    }
}

extension Registry {
    /// Stored rows after feed id `after`, oldest first, as the feed hands them out (at most
    /// `limit`, and about 1 MiB of payload).
    func feedEntries(after: Int64, limit: Int) async throws -> [FeedEntry] {
        try await store.read { db in
            var entries: [FeedEntry] = []
            var bytes = 0
            try db.forEachRow(sql: "SELECT id, agent, source, payload FROM status_entry WHERE id > ? ORDER BY id LIMIT ?",
                              arguments: [after, limit]) { row in
                let payload: Data = row["payload"]
                bytes += payload.count
                entries.append(FeedEntry(id: row["id"], agent: row["agent"], source: row["source"], payload: payload))
                return bytes < TimelineQuery.pageBytes
            }
            return entries
        }
    }
}

/// What the feed hands readers: the stored JSON and what the stream filters on.
public struct FeedEntry: Sendable {
    public var id: Int64
    public var agent: String
    public var source: String?
    public var payload: Data

    init(_ record: StatusRecord) {
        id = record.id
        agent = record.agent
        source = record.object?.source
        payload = record.payload ?? Data()
    }

    init(id: Int64, agent: String, source: String?, payload: Data) {
        self.id = id
        self.agent = agent
        self.source = source
        self.payload = payload
    }

    /// What it holds in memory, roughly.
    var cost: Int { payload.count + agent.utf8.count + (source?.utf8.count ?? 0) + 64 }
}

/// One reader's place in the feed: an `AsyncSequence` of batches that ends when the reader
/// fell behind (`overflowed`), was finished, or its task was cancelled.
public final class StatusSubscription: AsyncSequence, Sendable {
    public enum Event: Sendable {
        case entries([FeedEntry])
        /// Nothing new for a while (see `tick()`): a stream writes a keep-alive.
        case idle
    }

    private struct State {
        var buffer: [Event] = []
        var entries = 0
        var bytes = 0
        var overflowed = false
        var finished = false
        var waiter: CheckedContinuation<Event?, Never>?
    }

    private let state = Mutex(State())
    private let limits: StatusFeed.Limits
    private let onEnd: @Sendable () -> Void

    init(limits: StatusFeed.Limits, onEnd: @escaping @Sendable () -> Void) {
        self.limits = limits
        self.onEnd = onEnd
    }

    /// Whether it ended because the reader fell behind.
    public var overflowed: Bool { state.withLock { $0.overflowed } }

    func offer(_ batch: [FeedEntry]) {
        let cost = batch.reduce(0) { $0 + $1.cost }
        deliver { state in
            state.buffer.append(.entries(batch))
            state.entries += batch.count
            state.bytes += cost
            if state.entries > limits.entries || state.bytes > limits.bytes {
                // Cut off: drop what it holds; it rereads from the database.
                state.overflowed = true
                state.finished = true
                state.buffer = []
            }
        }
    }

    /// Wakes an idle reader with `.idle` (nothing is queued if it is busy).
    public func tick() {
        deliver { state in if state.buffer.isEmpty { state.buffer.append(.idle) } }
    }

    /// Ends the subscription; the reader sees what is buffered, then the end.
    public func finish() {
        deliver { $0.finished = true }
    }

    /// Applies `change` and hands the reader its next event if it is waiting.
    private func deliver(_ change: (inout State) -> Void) {
        var ended = false
        let resume = state.withLock { state -> (CheckedContinuation<Event?, Never>, Event?)? in
            guard !state.finished else { return nil }
            change(&state)
            ended = state.finished
            guard let waiter = state.waiter else { return nil }
            if let event = Self.take(&state) {
                state.waiter = nil
                return (waiter, event)
            }
            if state.finished {
                state.waiter = nil
                return (waiter, nil)
            }
            return nil
        }
        if let (waiter, event) = resume { waiter.resume(returning: event) }
        if ended { onEnd() }
    }

    private static func take(_ state: inout State) -> Event? {
        guard !state.buffer.isEmpty else { return nil }
        let event = state.buffer.removeFirst()
        if case .entries(let batch) = event {
            state.entries -= batch.count
            state.bytes -= batch.reduce(0) { $0 + $1.cost }
        }
        return event
    }

    /// The next event, or nil at the end.
    public func next() async -> Event? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Event?, Never>) in
                let ready = state.withLock { state -> (Event?, Bool) in
                    if let event = Self.take(&state) { return (event, true) }
                    if state.finished || Task.isCancelled { return (nil, true) }
                    state.waiter = continuation
                    return (nil, false)
                }
                if ready.1 { continuation.resume(returning: ready.0) }
            }
        } onCancel: {
            finish()
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: StatusSubscription
        public mutating func next() async -> Event? { await subscription.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }

    deinit { onEnd() }
}
