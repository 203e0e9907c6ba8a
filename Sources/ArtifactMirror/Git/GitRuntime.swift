import CLibGit2
import Foundation

/// Process-wide libgit2 set-up. Every entry point that touches libgit2 calls
/// `GitRuntime.ensureInitialized()` first (libgit2 returns -1 from every call before
/// `git_libgit2_init()`).
public enum GitRuntime {
    /// Default CA bundle of Debian's `ca-certificates` package. libgit2 here links mbedTLS,
    /// which does not find the system bundle by itself.
    public static let defaultCABundle = "/etc/ssl/certs/ca-certificates.crt"

    private static let initialization: Void = {
        git_libgit2_init()
        // The mirror cache may be owned by another user (a volume, a CI cache):
        // libgit2's safe.directory check would refuse it with a misleading error.
        _ = relay_git_set_owner_validation(0)
        // Bound what libgit2 maps of pack files and caches: mapped pack windows count towards
        // the process RSS, and packing must not grow with the repository. Measured on the
        // 20k-file/200 MB benchmark: 8/16/16 MiB gives 68 MiB peak RSS instead of 117 MiB
        // with 32/64/32, at the same speed.
        _ = relay_git_set_mwindow_size(8 << 20)
        _ = relay_git_set_mwindow_mapped_limit(16 << 20)
        _ = relay_git_set_cache_max_size(16 << 20)
        _ = relay_git_enable_fsync_gitdir(1)
        _ = relay_git_set_user_agent("relay-artifact-mirror")
        if FileManager.default.fileExists(atPath: defaultCABundle) {
            _ = relay_git_set_ssl_cert_locations(defaultCABundle, nil)
        }
    }()

    /// Initializes libgit2 once per process.
    public static func ensureInitialized() {
        _ = initialization
    }

    /// Points libgit2's TLS at a CA bundle (PEM), e.g. a private CA for a self-hosted GitLab.
    ///
    /// This is process-wide in libgit2, so the last call wins; pass a bundle that also holds
    /// the public roots if both kinds of server are used.
    public static func useCertificateAuthorities(file: String) throws(ArtifactMirrorError) {
        ensureInitialized()
        guard FileManager.default.isReadableFile(atPath: file) else {
            throw .invalidArgument("CA file \(file) does not exist or is not readable")
        }
        if relay_git_set_ssl_cert_locations(file, nil) < 0 {
            throw .invalidArgument("CA file \(file) was rejected by libgit2: \(GitError.last(code: -1).message)")
        }
    }

    /// Transports compiled into this libgit2 (https and ssh are optional at build time).
    public static var features: (https: Bool, ssh: Bool) {
        ensureInitialized()
        let bits = UInt32(bitPattern: git_libgit2_features())
        return (bits & GIT_FEATURE_HTTPS.rawValue != 0, bits & GIT_FEATURE_SSH.rawValue != 0)
    }

    /// `major.minor.revision` of the linked libgit2.
    public static var version: String {
        var major: Int32 = 0, minor: Int32 = 0, rev: Int32 = 0
        git_libgit2_version(&major, &minor, &rev)
        return "\(major).\(minor).\(rev)"
    }
}

/// A libgit2 failure: return code, error class and libgit2's own message.
///
/// libgit2 keeps the last error per thread, so it must be read right after the failing call,
/// on the same thread (never across an `await`).
public struct GitError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var klass: Int32
    public var message: String

    public static func last(code: Int32) -> GitError {
        if let error = git_error_last() {
            let message = error.pointee.message.map { String(cString: $0) } ?? "unknown libgit2 error"
            return GitError(code: code, klass: error.pointee.klass, message: message)
        }
        return GitError(code: code, klass: 0, message: "libgit2 call failed with code \(code)")
    }

    public var isNotFound: Bool { code == GIT_ENOTFOUND.rawValue }

    /// Errors that point at damaged repository data rather than at the remote or the request:
    /// the mirror is rebuilt from the remote when one of these shows up.
    public var indicatesCorruption: Bool {
        let corruptClasses: [git_error_t] = [GIT_ERROR_ODB, GIT_ERROR_ZLIB, GIT_ERROR_INDEXER, GIT_ERROR_REPOSITORY]
        if corruptClasses.contains(where: { Int32($0.rawValue) == klass }) { return true }
        // A ref or tree naming an object that is not in the object database.
        return klass == Int32(GIT_ERROR_REFERENCE.rawValue) && !isNotFound
    }

    public var description: String { message }
}

/// Calls a libgit2 function and turns a negative return into a `GitError`.
@inline(__always)
func gitCheck(_ code: Int32) throws(GitError) {
    if code < 0 { throw GitError.last(code: code) }
}
