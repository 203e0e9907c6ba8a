import ArtifactMirror
import Synchronization

/// Tells every subscriber (the Flux endpoint's catalog, the Flux integrations) which
/// artifact just became current. Subscribers get their own buffered stream; a slow one
/// only ever holds the newest announcement per source, so nothing here can block delivery.
public final class Publications: Sendable {
    private struct Subscriber {
        let continuation: AsyncStream<ArtifactRecord>.Continuation
    }
    private let subscribers = Mutex<[UInt64: Subscriber]>([:])
    private let nextID = Atomic<UInt64>(0)

    public init() {}

    /// A stream of announcements from now on; it ends when the subscriber stops iterating.
    public func subscribe() -> AsyncStream<ArtifactRecord> {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<ArtifactRecord>.makeStream(bufferingPolicy: .bufferingNewest(256))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = Subscriber(continuation: continuation) }
        return stream
    }

    func announce(_ record: ArtifactRecord) {
        for subscriber in subscribers.withLock({ Array($0.values) }) { subscriber.continuation.yield(record) }
    }
}
