import Crypto
import Foundation

/// One packed artifact as the store records it.
public struct ArtifactRecord: Sendable, Codable, Equatable {
    /// The source identity (remote URL without credentials, or absolute local path).
    public var source: String
    /// Flux revision string, e.g. `main@sha1:<commit>`.
    public var revision: String
    public var commit: String
    /// `sha256:<64 lowercase hex>` of the exact file bytes.
    public var digest: String
    public var size: UInt64
    /// Regular files archived.
    public var files: Int
    /// Paths left out as symlinks, submodules or unusable names.
    public var skipped: [SkippedPath]
    /// Fingerprint of the user's extra ignore patterns (part of the cache key).
    public var ignoreKey: String
    public var createdAt: Date
    public var lastUsedAt: Date
    /// Where the artifact came from (remote URL without credentials), when known: the relay
    /// agent puts it in the OCI `org.opencontainers.image.source` annotation.
    public var origin: String?
    /// When the relay packaged it, when known (stable for the same artifact, unlike
    /// `createdAt`, which is when this store recorded it).
    public var packagedAt: Date?
    /// A Helm chart or OCI artifact source's manifest and small blobs (nil for Git sources).
    public var oci: OCIPayload?

    public init(source: String, revision: String, commit: String, digest: String, size: UInt64, files: Int,
                skipped: [SkippedPath], ignoreKey: String, createdAt: Date, lastUsedAt: Date,
                origin: String? = nil, packagedAt: Date? = nil, oci: OCIPayload? = nil) {
        self.source = source
        self.revision = revision
        self.commit = commit
        self.digest = digest
        self.size = size
        self.files = files
        self.skipped = skipped
        self.ignoreKey = ignoreKey
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.origin = origin
        self.packagedAt = packagedAt
        self.oci = oci
    }
}

/// A locked temporary file (`ArtifactStore.reserveTemporaryFile`).
public struct TemporaryFileReservation: Sendable {
    public let path: String
    let fd: Int32
    /// Deletes the file if it is still there (not published) and drops the lock.
    public func release() {
        unlink(path)
        close(fd)
    }
}

/// Content-addressed artifact storage with an index of (source, revision, ignore rules) →
/// digest and a per-source retention limit.
///
/// Layout under `root`:
/// ```
/// artifacts/sha256/<hex>.tar.gz   immutable, named by digest
/// index/<source-key>.json         records of one source, most recently used first
/// tmp/                            artifacts being written
/// .lock                           serialises index updates and garbage collection
/// ```
/// Writes go to `tmp/`, are fsynced and renamed into place; the index is replaced
/// atomically; so a crash leaves either the old state or the new one.
public final class ArtifactStore: Sendable {
    public let root: URL
    /// Artifacts kept per source; older ones are deleted unless another source uses them.
    public let retention: Int
    /// A record pushed out by retention stays (file and index entry) until the record that
    /// replaced it is at least this old: readers that just resolved it can still fetch it.
    public let replacedGrace: TimeInterval

    public init(root: URL, retention: Int = 10, replacedGrace: TimeInterval = 0) throws(ArtifactMirrorError) {
        guard retention >= 1 else { throw .invalidArgument("retention must be at least 1 (got \(retention))") }
        self.replacedGrace = replacedGrace
        self.root = root.standardizedFileURL
        self.retention = retention
        for dir in ["artifacts/sha256", "index", "tmp"] {
            try FileSystem.createDirectory(self.root.appendingPathComponent(dir).path)
        }
    }

    /// Where the artifact with this digest lives (whether or not it exists).
    public func path(forDigest digest: String) -> URL {
        let hex = digest.hasPrefix("sha256:") ? String(digest.dropFirst(7)) : digest
        return root.appendingPathComponent("artifacts/sha256/\(hex).tar.gz")
    }

    /// The record for this key if its file is present and complete; marks it used.
    public func lookup(source: String, revision: String, ignoreKey: String) throws(ArtifactMirrorError) -> ArtifactRecord? {
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        var records = try readIndex(source: source)
        guard let index = records.firstIndex(where: { $0.revision == revision && $0.ignoreKey == ignoreKey }) else {
            return nil
        }
        var record = records[index]
        guard FileSystem.fileSize(path(forDigest: record.digest).path) == record.size else {
            records.remove(at: index)  // the file is gone or damaged: forget it and re-pack
            try writeIndex(records, source: source)
            return nil
        }
        record.lastUsedAt = Date()
        records.remove(at: index)
        records.insert(record, at: 0)
        try writeIndex(records, source: source)
        return record
    }

    /// A fresh temporary file for an artifact being written. It is created and `flock`ed under
    /// the store lock, so `removeOrphanedTemporaryFiles` (which holds that lock too) never sees
    /// it unlocked while its writer lives.
    func temporaryFile() throws(ArtifactMirrorError) -> OutputFile {
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        let name = "pack-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).tar.gz.tmp"
        return try OutputFile(creating: root.appendingPathComponent("tmp/\(name)").path)
    }

    /// A temporary file in `tmp/` for a writer outside this module (an upstream download):
    /// created and `flock`ed under the store lock like `temporaryFile()`, so orphan removal
    /// (another pack, `artifact-mirror pack` on a shared store) never takes it while its
    /// writer lives. The writer opens `path` itself; `release()` drops the lock once the file
    /// is published or deleted.
    public func reserveTemporaryFile(prefix: String) throws(ArtifactMirrorError) -> TemporaryFileReservation {
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        let path = root.appendingPathComponent("tmp/\(prefix)-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).tmp").path
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .storage(path: path, detail: "cannot create: \(errnoText())") }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        return TemporaryFileReservation(path: path, fd: fd)
    }

    /// Moves a completed (closed, fsynced) temporary file into place under its digest,
    /// records it, and applies retention. Returns the stored record.
    func commit(temporaryPath: String, record: ArtifactRecord) throws(ArtifactMirrorError) -> ArtifactRecord {
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        let final = path(forDigest: record.digest).path
        if FileSystem.fileSize(final) == record.size {
            unlink(temporaryPath)  // identical content already stored
        } else {
            try FileSystem.rename(temporaryPath, to: final)
        }
        try insertLocked(record)
        return record
    }

    /// Publishes a complete, verified file (fsynced, on the store's filesystem) under its
    /// digest and records it: the relay agent's way in, after it has checked size and digest.
    public func publish(verifiedFile path: String, record: ArtifactRecord) throws(ArtifactMirrorError) -> ArtifactRecord {
        try commit(temporaryPath: path, record: record)
    }

    /// Records an artifact whose file the store already holds (same digest, another
    /// source or revision). Returns nil if the file is missing or its size differs.
    public func recordExisting(_ record: ArtifactRecord) throws(ArtifactMirrorError) -> ArtifactRecord? {
        guard FileSystem.fileSize(path(forDigest: record.digest).path) == record.size else { return nil }
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        try insertLocked(record)
        return record
    }

    /// Forgets an artifact everywhere and deletes its file (used when a stored file no
    /// longer matches its digest).
    public func remove(digest: String) throws(ArtifactMirrorError) {
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        for file in indexFiles() {
            let records = try decodeIndex(at: file)
            let kept = records.filter { $0.digest != digest }
            if kept.count != records.count, let source = kept.first?.source ?? records.first?.source {
                try writeIndex(kept, source: source)
            }
        }
        unlink(path(forDigest: digest).path)
    }

    /// Whether the store holds the file with this digest, complete (`size` bytes).
    public func holdsFile(digest: String, size: UInt64) -> Bool {
        FileSystem.fileSize(path(forDigest: digest).path) == size
    }

    /// Whether the store holds `record`'s file, complete (its recorded size).
    public func holdsFile(of record: ArtifactRecord) -> Bool {
        FileSystem.fileSize(path(forDigest: record.digest).path) == record.size
    }

    /// Moves the file stored under `digest` to `destination` (outside the served store), if
    /// it is still the file `device`/`inode` name: a good copy renamed into place since then
    /// is left alone. Records holding it as an older revision of a source are forgotten; a
    /// source's current record stays, so its tags do not move back to an older revision
    /// while the file is fetched again. Returns the records that held it, or nil when the
    /// file was not (or no longer) that one.
    public func quarantine(digest: String, device: UInt64, inode: UInt64,
                           to destination: String) throws(ArtifactMirrorError) -> [ArtifactRecord]? {
        let lock = try FileLock(path: lockPath)
        defer { lock.unlock() }
        let stored = path(forDigest: digest).path
        var info = stat()
        guard stat(stored, &info) == 0, UInt64(info.st_dev) == device, UInt64(info.st_ino) == inode else { return nil }
        try FileSystem.rename(stored, to: destination)  // on failure the file is deleted: gone from the store either way
        var holders: [ArtifactRecord] = []
        for file in indexFiles() {
            let records = try decodeIndex(at: file)
            holders += records.filter { $0.digest == digest }
            let kept = records.enumerated().filter { $0.offset == 0 || $0.element.digest != digest }.map(\.element)
            if kept.count != records.count, let source = kept.first?.source { try writeIndex(kept, source: source) }
        }
        return holders
    }

    /// Puts `record` first in its source's index and applies retention. Caller holds the lock.
    private func insertLocked(_ record: ArtifactRecord) throws(ArtifactMirrorError) {
        var records = try readIndex(source: record.source)
        records.removeAll { $0.revision == record.revision && $0.ignoreKey == record.ignoreKey }
        records.insert(record, at: 0)
        var kept = Array(records.prefix(retention))
        var evicted: [ArtifactRecord] = []
        let now = Date()
        for index in records.indices.dropFirst(retention) {
            // records[index - 1] is the newer record that replaced this one.
            if now.timeIntervalSince(records[index - 1].createdAt) < replacedGrace { kept.append(records[index]) } else { evicted.append(records[index]) }
        }
        records = kept
        try writeIndex(records, source: record.source)
        try collectGarbage(candidates: Set(evicted.map(\.digest)).subtracting(records.map(\.digest)))
    }

    /// Every record in the store, for listings.
    public func allRecords() throws(ArtifactMirrorError) -> [ArtifactRecord] {
        var all: [ArtifactRecord] = []
        for file in indexFiles() { all += try decodeIndex(at: file) }
        return all
    }

    /// Removes temporary files whose writer is gone (killed, crashed): in `tmp/`, files no
    /// process holds the `flock` of (every writer holds one from creation until its file is
    /// committed or deleted, and the kernel drops it when the writer dies, even by SIGKILL);
    /// in `index/`, atomic-write leftovers (only written under the store lock, held here).
    /// Safe while other processes (another relay, `artifact-mirror pack`) use the store: their
    /// files are locked. Pids are not used: they are reused, and differ across containers.
    /// Returns how many files were removed. Blocks on the store lock: call it off the
    /// cooperative thread pool, or at start-up.
    @discardableResult
    public func removeOrphanedTemporaryFiles() -> Int {
        guard let lock = try? FileLock(path: lockPath) else { return 0 }
        defer { lock.unlock() }
        var removed = 0
        let tmp = root.appendingPathComponent("tmp")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? [] {
            if FileSystem.removeIfUnlocked(tmp.appendingPathComponent(name).path) { removed += 1 }
        }
        let index = root.appendingPathComponent("index")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: index.path)) ?? [] where name.contains(".tmp-") {
            if unlink(index.appendingPathComponent(name).path) == 0 { removed += 1 }
        }
        return removed
    }

    // MARK: - Index files

    private var lockPath: String { root.appendingPathComponent(".lock").path }

    /// A readable, collision-free file name for a source.
    static func indexKey(for source: String) -> String {
        let readable = source.unicodeScalars.map { scalar -> Character in
            CharacterSet.alphanumerics.contains(scalar) && scalar.isASCII ? Character(scalar) : "_"
        }
        let hash = SHA256.hash(data: Data(source.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
        return String(String(readable).suffix(60)) + "-" + hash
    }

    private func indexPath(source: String) -> String {
        root.appendingPathComponent("index/\(Self.indexKey(for: source)).json").path
    }

    private func indexFiles() -> [String] {
        let dir = root.appendingPathComponent("index")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted().map { dir.appendingPathComponent($0).path }
    }

    private func readIndex(source: String) throws(ArtifactMirrorError) -> [ArtifactRecord] {
        let path = indexPath(source: source)
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return try decodeIndex(at: path).filter { $0.source == source }
    }

    private func decodeIndex(at path: String) throws(ArtifactMirrorError) -> [ArtifactRecord] {
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return try Self.decoder.decode([ArtifactRecord].self, from: data)
        } catch {
            throw .storage(path: path, detail: "unreadable index (\(error)); delete it to rebuild the cache")
        }
    }

    private func writeIndex(_ records: [ArtifactRecord], source: String) throws(ArtifactMirrorError) {
        let data: Data
        do { data = try Self.encoder.encode(records) } catch {
            throw .storage(path: indexPath(source: source), detail: "cannot encode index: \(error)")
        }
        try FileSystem.writeAtomically(data, to: indexPath(source: source))
    }

    private func collectGarbage(candidates: Set<String>) throws(ArtifactMirrorError) {
        guard !candidates.isEmpty else { return }
        var stillUsed = Set<String>()
        for file in indexFiles() { stillUsed.formUnion(try decodeIndex(at: file).map(\.digest)) }
        for digest in candidates.subtracting(stillUsed) { unlink(path(forDigest: digest).path) }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}
