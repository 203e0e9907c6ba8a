import Foundation
import Synchronization

/// Fans newly stored status records out to live readers (the server-sent-event stream, the
/// web page, the notifiers). Each subscriber has a bounded buffer: a reader too slow to keep
/// up is cut off (its stream ends) and resumes from the database after its last feed id, so
/// nothing is lost and the tunnel never waits for a reader.
public final class StatusFeed: Sendable {
    private let subscribers = Mutex<[UInt64: AsyncStream<[StatusRecord]>.Continuation]>([:])
    private let nextID = Atomic<UInt64>(0)
    let bufferLimit: Int

    public init(bufferLimit: Int = 4096) { self.bufferLimit = bufferLimit }

    /// Batches of newly stored records; the stream ends if the reader falls `bufferLimit`
    /// batches behind.
    public func subscribe() -> AsyncStream<[StatusRecord]> {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<[StatusRecord]>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        continuation.onTermination = { [weak self] _ in _ = self?.subscribers.withLock { $0.removeValue(forKey: id) } }
        subscribers.withLock { $0[id] = continuation }
        return stream
    }

    public func publish(_ records: [StatusRecord]) {
        guard !records.isEmpty else { return }
        for (id, continuation) in subscribers.withLock({ Array($0) }) {
            if case .dropped = continuation.yield(records) {
                // Full: end this subscriber; it rereads from the database.
                subscribers.withLock { _ = $0.removeValue(forKey: id) }
                continuation.finish()
            }
        }
    }
}
