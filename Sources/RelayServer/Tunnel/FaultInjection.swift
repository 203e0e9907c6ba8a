import Foundation
import Synchronization

/// Test-only fault injection, off unless `RELAY_TEST_CORRUPT_CHUNK=<n>` is set: the n-th
/// chunk this process serves (counting from 1) has one byte flipped *after* its checksum was
/// computed, once. The fault-tolerance tests use it to prove that a damaged chunk is caught
/// by the agent and fetched again; nothing else reads it.
final class FaultInjection: Sendable {
    private let corruptChunk: Int?
    private let served = Mutex(0)

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        corruptChunk = environment["RELAY_TEST_CORRUPT_CHUNK"].flatMap(Int.init)
    }

    func apply(to data: Data) -> Data {
        guard let corruptChunk else { return data }
        let index = served.withLock { count -> Int in
            count += 1
            return count
        }
        guard index == corruptChunk, !data.isEmpty else { return data }
        var damaged = data
        damaged[damaged.startIndex] ^= 0xFF
        return damaged
    }
}
