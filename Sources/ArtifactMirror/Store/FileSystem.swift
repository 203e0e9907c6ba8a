import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive advisory lock (`flock`) on a file, held until `unlock()` or deinit.
///
/// `flock` locks belong to the open file description, so two holders in the same process
/// exclude each other as well as two processes do. Acquisition blocks: call it from a
/// blocking worker, never from the cooperative thread pool.
final class FileLock {
    private var fd: Int32

    init(path: String) throws(ArtifactMirrorError) {
        fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .storage(path: path, detail: "cannot open lock file: \(errnoText())") }
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let detail = errnoText()
            close(fd)
            throw .storage(path: path, detail: "cannot lock: \(detail)")
        }
    }

    func unlock() {
        guard fd >= 0 else { return }
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { unlock() }
}

public enum FileSystem {
    static func createDirectory(_ path: String) throws(ArtifactMirrorError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw .storage(path: path, detail: "cannot create directory: \(error.localizedDescription)")
        }
    }

    /// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over `path`
    /// and fsyncs the directory: readers see the old or the new file, never half of one.
    public static func writeAtomically(_ data: Data, to path: String) throws(ArtifactMirrorError) {
        let temp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .storage(path: temp, detail: errnoText()) }
        var failure: String?
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errnoText(); return
                }
                offset += n
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = errnoText() }
        close(fd)
        if let failure {
            unlink(temp)
            throw .storage(path: path, detail: "write failed: \(failure)")
        }
        try rename(temp, to: path)
    }

    /// `rename(2)` followed by an fsync of the target directory.
    static func rename(_ from: String, to: String) throws(ArtifactMirrorError) {
        guard Glibc.rename(from, to) == 0 else {
            let detail = errnoText()
            unlink(from)
            throw .storage(path: to, detail: "rename failed: \(detail)")
        }
        syncDirectory(containing: to)
    }

    static func syncDirectory(containing path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    static func removeTree(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Deletes `path` if no process holds a `flock` on it (its writer is gone); keeps it
    /// (and returns false) while one does.
    static func removeIfUnlocked(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        return unlink(path) == 0
    }

    static func fileSize(_ path: String) -> UInt64? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return UInt64(info.st_size)
    }
}

func errnoText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}

/// An output file written with plain `write(2)` calls and fsynced before close.
///
/// The file carries an exclusive `flock` from creation until this object is released (past
/// `close()`, so through the rename that commits it): the mark of a live writer that
/// `FileSystem.removeIfUnlocked` respects.
final class OutputFile {
    let path: String
    private var fd: Int32
    /// A duplicate of `fd`: the lock belongs to the open file description and lasts until
    /// every descriptor of it is closed.
    private var lockFD: Int32 = -1

    init(creating path: String) throws(ArtifactMirrorError) {
        self.path = path
        fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .storage(path: path, detail: "cannot create: \(errnoText())") }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        lockFD = dup(fd)
    }

    func write(_ buffer: UnsafeRawBufferPointer) throws(ArtifactMirrorError) {
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                throw .storage(path: path, detail: code == ENOSPC
                    ? "no space left on device; free space or point --output elsewhere"
                    : "write failed: \(errnoText(code))")
            }
            offset += n
        }
    }

    /// fsync + close; the file is complete on disk when this returns.
    func close() throws(ArtifactMirrorError) {
        guard fd >= 0 else { return }
        let synced = fsync(fd) == 0
        let detail = errnoText()
        Glibc.close(fd)
        fd = -1
        if !synced { throw .storage(path: path, detail: "fsync failed: \(detail)") }
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
        if lockFD >= 0 { Glibc.close(lockFD) }
    }
}
