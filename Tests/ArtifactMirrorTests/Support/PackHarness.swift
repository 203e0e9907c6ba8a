import Foundation
import Synchronization
@testable import ArtifactMirror

/// A packer with its own cache and store in a temporary directory, recording its events.
final class PackHarness: Sendable {
    let directory: TemporaryDirectory
    let cache: URL
    let store: ArtifactStore
    private let recorded = EventLog()

    init(retention: Int = 10) throws {
        directory = try TemporaryDirectory(prefix: "pack")
        cache = directory.appending("cache")
        store = try ArtifactStore(root: directory.appending("store"), retention: retention)
    }

    var events: [String] { recorded.entries }

    func packer(threads: Int = 2) -> ArtifactPacker {
        ArtifactPacker(cacheDirectory: cache, store: store, compressionThreads: threads, events: { [recorded] event in
            if case .rebuildingMirror(let reason) = event { recorded.append("rebuild: \(reason)") }
        })
    }

    func pack(_ remote: String, _ reference: GitReference? = nil, credentials: GitCredentials = GitCredentials(),
              ignore: String? = nil, threads: Int = 2) async throws -> PackResult {
        let request = PackRequest(remote: try RemoteLocation(remote), reference: reference,
                                  credentials: credentials, ignore: ignore)
        return try await packer(threads: threads).pack(request)
    }

    /// The error a pack fails with (or nil if it succeeds).
    func packError(_ remote: String, _ reference: GitReference? = nil,
                   credentials: GitCredentials = GitCredentials()) async -> ArtifactMirrorError? {
        do {
            _ = try await pack(remote, reference, credentials: credentials)
            return nil
        } catch let error as ArtifactMirrorError {
            return error
        } catch {
            return .git(operation: "test", message: "unexpected error type: \(error)")
        }
    }

    func remove() { directory.remove() }
}

/// Events recorded from the packer's callback (which may run on any thread).
final class EventLog: Sendable {
    private let storage = Mutex<[String]>([])
    var entries: [String] { storage.withLock { $0 } }
    func append(_ entry: String) { storage.withLock { $0.append(entry) } }
}
