import Crypto
import Foundation

/// Bare mirrors of remotes under one cache directory: `<key>.git` per remote, guarded by
/// `<key>.lock`.
///
/// - A mirror is used only when it carries the marker written at the end of its creation;
///   a half-created one (process killed) is rebuilt.
/// - A mirror that libgit2 cannot open is rebuilt; callers ask for a rebuild when they meet
///   corrupt objects.
/// - The lock is an exclusive `flock` held for the whole job, so concurrent packs of one
///   remote (threads or processes) take turns instead of corrupting each other.
final class MirrorCache {
    static let markerName = "relay-mirror"
    let root: String

    init(root: URL) throws(ArtifactMirrorError) {
        self.root = root.standardizedFileURL.path
        try FileSystem.createDirectory(self.root)
    }

    /// `<readable>-<hash>`: stable per remote identity, safe as a file name.
    static func key(for identity: String) -> String {
        ArtifactStore.indexKey(for: identity)
    }

    func mirrorPath(for location: RemoteLocation) -> String {
        (root as NSString).appendingPathComponent(Self.key(for: location.identity) + ".git")
    }

    /// Runs `body` with the mirror of `location`, holding its lock.
    ///
    /// - Parameter rebuild: discard the existing mirror first.
    /// - Parameter onRebuild: told why a mirror is being recreated.
    func withMirror<T>(for location: RemoteLocation, rebuild: Bool, onRebuild: (String) -> Void,
                       _ body: (GitRepository) throws -> T) throws -> T {
        let path = mirrorPath(for: location)
        let lock = try FileLock(path: (root as NSString).appendingPathComponent(Self.key(for: location.identity) + ".lock"))
        defer { lock.unlock() }

        let marker = (path as NSString).appendingPathComponent(Self.markerName)
        var repository: GitRepository?
        if rebuild {
            FileSystem.removeTree(path)
        } else if FileManager.default.fileExists(atPath: path) {
            if !FileManager.default.fileExists(atPath: marker) {
                onRebuild("the mirror at \(path) was never completed (interrupted clone)")
                FileSystem.removeTree(path)
            } else {
                removeStaleLockFiles(in: path)
                do {
                    repository = try GitRepository.openBare(at: path)
                } catch {
                    onRebuild("the mirror at \(path) cannot be opened (\(error.message))")
                    FileSystem.removeTree(path)
                }
            }
        }
        if repository == nil {
            repository = try create(at: path, location: location)
        }
        return try body(repository!)
    }

    /// Creates an empty bare repository in a temporary directory and renames it into place
    /// once the marker is written.
    private func create(at path: String, location: RemoteLocation) throws -> GitRepository {
        let temp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            _ = try GitRepository.initBare(at: temp)
        } catch {
            FileSystem.removeTree(temp)
            throw ArtifactMirrorError.storage(path: temp, detail: "cannot create mirror: \(error.message)")
        }
        let marker = (temp as NSString).appendingPathComponent(Self.markerName)
        try FileSystem.writeAtomically(Data("\(location.identity)\n".utf8), to: marker)
        try FileSystem.rename(temp, to: path)
        do {
            return try GitRepository.openBare(at: path)
        } catch {
            throw ArtifactMirrorError.storage(path: path, detail: "cannot open new mirror: \(error.message)")
        }
    }

    /// Lock files left by a killed fetch would make every later ref update fail. Holding the
    /// mirror lock means no one else is writing, so any that exist are stale.
    private func removeStaleLockFiles(in path: String) {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return }
        while let relative = walker.nextObject() as? String {
            if relative == "objects" {
                walker.skipDescendants()
                continue
            }
            if relative.hasSuffix(".lock") {
                unlink((path as NSString).appendingPathComponent(relative))
            }
        }
    }
}
