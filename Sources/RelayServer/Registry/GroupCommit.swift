import Foundation
import Synchronization

/// Small registry writes from many connections, committed together: every write queued while
/// one transaction runs goes into the next one, so a burst of N sessions (a fleet
/// reconnecting) costs a handful of fsyncs instead of N. Nothing waits when the relay is quiet:
/// a lone write starts its transaction at once.
///
/// Writes keep their order (FIFO), each runs in its own savepoint (one that fails is rolled
/// back and reported to its caller alone), and a caller that awaits `write` learns whether its
/// write is durable. The transaction runs on the store's own threads, never on the cooperative pool.
final class GroupCommit: Sendable {
    typealias Write = @Sendable (any SQLConnection) throws -> Void

    private struct Queued {
        var write: Write
        var done: Commit?
    }
    private struct State {
        var queue: [Queued] = []
        var committing = false
    }

    private let store: any SQLStore
    private let state = Mutex(State())

    init(registry: Registry) { store = registry.store }

    /// Queues `write` and waits until its transaction committed (or throws its error).
    func write(_ write: @escaping Write) async throws {
        try await queue(write).committed()
    }

    /// `write` that returns what the write computed, once its transaction committed.
    func write<T: Sendable>(_ write: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        let result = WriteResult<T>()
        try await queue { db in result.set(try write(db)) }.committed()
        // A write that committed has run and set its result.
        guard let value = result.value else { preconditionFailure("a committed group-commit write left no result") }
        return value
    }

    /// Queues `write` now, in the caller's order (e.g. under the caller's lock), and returns
    /// what to await for its outcome.
    func queue(_ write: @escaping Write) -> Commit {
        let commit = Commit()
        enqueue(Queued(write: write, done: commit))
        return commit
    }

    /// Queues `write` without waiting (a failure is dropped: for records that the next write
    /// of the same row corrects, like `last_seen`).
    func post(_ write: @escaping Write) {
        enqueue(Queued(write: write, done: nil))
    }

    private func enqueue(_ queued: Queued) {
        let start = state.withLock { state -> Bool in
            state.queue.append(queued)
            guard !state.committing else { return false }
            state.committing = true
            return true
        }
        if start { Task { await self.commitUntilEmpty() } }
    }

    private func commitUntilEmpty() async {
        while true {
            let batch = state.withLock { state -> [Queued] in
                let batch = state.queue
                state.queue.removeAll(keepingCapacity: true)
                if batch.isEmpty { state.committing = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            RelayMetrics.registryBatchSize.record(batch.count)
            let writes = batch.map(\.write)
            do {
                let failures = try await store.write { db -> [Int: any Error] in
                    // Replicas: the feed's append lock first, before any row lock a write
                    // takes (presence updates), so two replicas never wait on each other in
                    // opposite orders.
                    try Registry.lockFeed(db)
                    var failures: [Int: any Error] = [:]
                    for (index, write) in writes.enumerated() {
                        do {
                            try db.inSavepoint { try write(db) }
                        } catch {
                            failures[index] = error
                        }
                    }
                    return failures
                }
                for (index, queued) in batch.enumerated() {
                    queued.done?.finish(failures[index].map { .failure($0) } ?? .success(()))
                }
            } catch {
                for queued in batch { queued.done?.finish(.failure(error)) }
            }
        }
    }
}

/// What a write computed, handed from the writer's thread to its caller.
final class WriteResult<T: Sendable>: Sendable {
    private let stored = Mutex<T?>(nil)
    func set(_ value: T) { stored.withLock { $0 = value } }
    var value: T? { stored.withLock { $0 } }
}

/// The outcome of one queued write: awaited by at most one caller, possibly after it is known.
final class Commit: Sendable {
    private struct State {
        var result: Result<Void, any Error>?
        var waiter: CheckedContinuation<Void, any Error>?
    }
    private let state = Mutex(State())

    func committed() async throws {
        try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
            let known = state.withLock { state -> Result<Void, any Error>? in
                if let result = state.result { return result }
                state.waiter = waiter
                return nil
            }
            if let known { waiter.resume(with: known) }
        }
    }

    fileprivate func finish(_ result: Result<Void, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }
}
