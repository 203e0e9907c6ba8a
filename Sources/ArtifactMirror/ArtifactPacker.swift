import Crypto
import Dispatch
import Foundation

/// What to pack.
public struct PackRequest: Sendable {
    public var remote: RemoteLocation
    /// nil means Flux's default (`branch: master`).
    public var reference: GitReference?
    public var credentials: GitCredentials
    /// Extra ignore patterns, gitignore syntax, with the priority of GitRepository `.spec.ignore`.
    public var ignore: String?

    public init(remote: RemoteLocation, reference: GitReference? = nil, credentials: GitCredentials = GitCredentials(),
                ignore: String? = nil) {
        self.remote = remote
        self.reference = reference
        self.credentials = credentials
        self.ignore = ignore
    }
}

/// What was packed (or found already packed).
public struct PackResult: Sendable, Codable, Equatable {
    public var source: String
    public var revision: String
    public var commit: String
    public var digest: String
    public var size: UInt64
    /// The artifact file.
    public var path: String
    public var files: Int
    public var skipped: [SkippedPath]
    /// True when the store already held this artifact and nothing was re-packed.
    public var cached: Bool
}

/// Progress and notable events of a pack, for a terminal or logs.
public enum PackEvent: Sendable {
    case fetching(FetchProgress)
    case packing(files: Int, bytes: UInt64)
    case rebuildingMirror(reason: String)
}

/// Turns a Git revision into a Flux artifact: mirror → resolve → archive → store.
public final class ArtifactPacker: Sendable {
    public let cacheDirectory: URL
    public let store: ArtifactStore
    public let compressionThreads: Int
    private let events: (@Sendable (PackEvent) -> Void)?

    public init(cacheDirectory: URL, store: ArtifactStore,
                compressionThreads: Int = ProcessInfo.processInfo.activeProcessorCount,
                events: (@Sendable (PackEvent) -> Void)? = nil) {
        self.cacheDirectory = cacheDirectory
        self.store = store
        self.compressionThreads = max(1, compressionThreads)
        self.events = events
    }

    /// Packs on a dedicated thread (libgit2 and file I/O block), leaving the caller's
    /// executor free.
    public func pack(_ request: PackRequest) async throws(ArtifactMirrorError) -> PackResult {
        let result: Result<PackResult, ArtifactMirrorError> = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: Result { () throws(ArtifactMirrorError) in try self.packBlocking(request) })
            }
        }
        return try result.get()
    }

    /// Packs on the calling thread.
    public func packBlocking(_ request: PackRequest) throws(ArtifactMirrorError) -> PackResult {
        GitRuntime.ensureInitialized()
        do {
            return try attempt(request, rebuild: false)
        } catch let error as GitError where error.indicatesCorruption {
            events?(.rebuildingMirror(reason: "the mirror is damaged (\(error.message))"))
            return try mapErrors { try attempt(request, rebuild: true) }
        } catch let error as ArtifactMirrorError {
            throw error
        } catch {
            throw ArtifactMirrorError.git(operation: "pack", message: "\(error)")
        }
    }

    private func mapErrors<T>(_ body: () throws -> T) throws(ArtifactMirrorError) -> T {
        do { return try body() } catch let error as ArtifactMirrorError { throw error } catch let error as GitError {
            throw .git(operation: "pack (after rebuilding the mirror from the remote)",
                       message: "\(error.message); the remote repository itself may be damaged")
        } catch {
            throw .git(operation: "pack", message: "\(error)")
        }
    }

    private func attempt(_ request: PackRequest, rebuild: Bool) throws -> PackResult {
        let cache = try MirrorCache(root: cacheDirectory)
        let reference = request.reference ?? .fluxDefault
        let extraPatterns = IgnorePattern.parse(request.ignore ?? "", domain: [])
        let ignoreKey = Self.ignoreKey(request.ignore)
        let events = self.events
        return try cache.withMirror(for: request.remote, rebuild: rebuild,
                                    onRebuild: { events?(.rebuildingMirror(reason: $0)) }) { repository in
            let callbacks = RemoteCallbacks(location: request.remote, credentials: request.credentials,
                                            onProgress: { events?(.fetching($0)) })
            let session = try RemoteSession(repository: repository, location: request.remote, callbacks: callbacks)
            let resolved = try ReferenceResolver(repository: repository, session: session, location: request.remote)
                .resolve(reference)

            if let hit = try store.lookup(source: request.remote.identity, revision: resolved.revision, ignoreKey: ignoreKey) {
                return PackResult(record: hit, path: store.path(forDigest: hit.digest).path, cached: true)
            }
            let record = try archive(resolved, from: repository, source: request.remote.identity,
                                     extraPatterns: extraPatterns, ignoreKey: ignoreKey)
            return PackResult(record: record, path: store.path(forDigest: record.digest).path, cached: false)
        }
    }

    /// Streams the commit's tree through the tar writer and gzip into a temporary file,
    /// hashing the compressed bytes as they are written, then commits it to the store.
    private func archive(_ resolved: ResolvedRevision, from repository: GitRepository, source: String,
                         extraPatterns: [IgnorePattern], ignoreKey: String) throws -> ArtifactRecord {
        store.removeOrphanedTemporaryFiles()
        let file = try store.temporaryFile()
        var hasher = SHA256()
        var completed = false
        defer { if !completed { unlink(file.path) } }

        let gzip = try ParallelGzipWriter(threads: compressionThreads) { bytes in
            hasher.update(bufferPointer: bytes)
            try file.write(bytes)
        }
        let events = self.events
        let summary = try TreeArchiver(repository: repository, extraPatterns: extraPatterns,
                                       progress: { events?(.packing(files: $0, bytes: $1)) })
            .archive(commit: resolved.commit, into: gzip)
        let size = try gzip.finish()
        try file.close()
        let digest = "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let now = Date()
        let record = ArtifactRecord(source: source, revision: resolved.revision, commit: resolved.commit.hex,
                                    digest: digest, size: size, files: summary.files, skipped: summary.skipped,
                                    ignoreKey: ignoreKey, createdAt: now, lastUsedAt: now)
        let stored = try store.commit(temporaryPath: file.path, record: record)
        completed = true
        return stored
    }

    /// Cache-key fingerprint of the user's extra patterns (the repository's own
    /// `.sourceignore` files are part of the commit, so the revision covers them).
    static func ignoreKey(_ patterns: String?) -> String {
        guard let patterns, !patterns.isEmpty else { return "none" }
        return "sha256:" + SHA256.hash(data: Data(patterns.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

extension PackResult {
    init(record: ArtifactRecord, path: String, cached: Bool) {
        self.init(source: record.source, revision: record.revision, commit: record.commit, digest: record.digest,
                  size: record.size, path: path, files: record.files, skipped: record.skipped, cached: cached)
    }
}
