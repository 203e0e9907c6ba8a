import Crypto
import Foundation
import Synchronization
import Provenance

/// The SHA-256 of every `chunkSize`-aligned chunk of recently packaged artifacts, so a
/// `Fetch` does not hash what it serves (hashing was the largest CPU cost of serving one).
/// `prime` reads an artifact once, computing its chunk checksums and its whole digest, and
/// keeps the checksums only when the digest matches: a cached checksum always describes the
/// bytes the digest names, so a damaged read at serving time is still caught by the agent.
/// Chunks of artifacts not (yet) primed, and chunks at unaligned offsets (a resume after a
/// chunk-size change), are hashed as they are served. 32 bytes per chunk; at most
/// `capacity` artifacts (the oldest primed is dropped).
public final class ChunkHashCache: Sendable {
    private struct Key: Hashable { var digest: String; var chunkSize: Int }
    private struct State { var entries: [Key: [UInt8]] = [:]; var order: [Key] = [] }
    private let state = Mutex(State())
    private let capacity: Int

    public init(capacity: Int = 64) { self.capacity = capacity }

    func hash(of data: Data, digest: String, offset: UInt64, chunkSize: Int) -> Data {
        if chunkSize > 0, offset % UInt64(chunkSize) == 0 {
            let start = Int(offset / UInt64(chunkSize)) * 32
            let cached = state.withLock { state -> Data? in
                guard let hashes = state.entries[Key(digest: digest, chunkSize: chunkSize)],
                      start + 32 <= hashes.count else { return nil }
                return Data(hashes[start ..< start + 32])
            }
            if let cached { return cached }
        }
        return Data(SHA256.hash(data: data))
    }

    /// Computes and keeps the chunk checksums of the artifact at `path` (on a thread of its
    /// own: one read of the file, two SHA-256 passes). Returns whether they were kept.
    @discardableResult
    public func prime(path: String, digest: String, chunkSize: Int) async -> Bool {
        let key = Key(digest: digest, chunkSize: chunkSize)
        if state.withLock({ $0.entries[key] != nil }) { return true }
        let hashes: [UInt8]? = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Self.chunkHashes(path: path, digest: digest, chunkSize: chunkSize)) }
                .start()
        }
        guard let hashes else { return false }
        state.withLock { state in
            if state.entries.updateValue(hashes, forKey: key) == nil {
                state.order.append(key)
                if state.order.count > capacity { state.entries.removeValue(forKey: state.order.removeFirst()) }
            }
        }
        return true
    }

    private static func chunkHashes(path: String, digest: String, chunkSize: Int) -> [UInt8]? {
        guard chunkSize > 0, let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        var whole = SHA256()
        var hashes: [UInt8] = []
        while true {
            let read: Data?
            do { read = try handle.read(upToCount: chunkSize) } catch { return nil }
            guard let data = read, !data.isEmpty else { break }  // nil or empty: end of file
            whole.update(data: data)
            hashes.append(contentsOf: SHA256.hash(data: data))
        }
        let actual = SHA256Digest(whole.finalize()).description
        return actual == digest ? hashes : nil
    }
}
