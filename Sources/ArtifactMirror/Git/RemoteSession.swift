import CLibGit2
import Foundation

/// One advertised ref of a remote.
struct RemoteRef {
    var name: String
    var oid: ObjectID
    var symrefTarget: String?
}

/// A connection to a remote for one fetch: connect, list refs, download what one ref needs.
///
/// The remote is anonymous (nothing is written to the mirror's config, so credentials
/// never land on disk). Confinement: one thread, like the repository it belongs to.
final class RemoteSession {
    private let remote: OpaquePointer
    private let callbacks: RemoteCallbacks
    private var table = git_remote_callbacks()
    private var connected = false

    init(repository: GitRepository, location: RemoteLocation, callbacks: RemoteCallbacks) throws(ArtifactMirrorError) {
        if location.transport == .local, !FileManager.default.fileExists(atPath: location.url) {
            // libgit2 would answer "unsupported URL protocol".
            throw .notARepository(remote: location.identity, detail: "no such file or directory")
        }
        self.callbacks = callbacks
        var remote: OpaquePointer?
        let status = git_remote_create_anonymous(&remote, repository.pointer, location.url)
        if status < 0 {
            throw .invalidArgument("'\(location.identity)' is not a usable Git remote: \(GitError.last(code: status).message)")
        }
        self.remote = remote!
        _ = relay_git_remote_callbacks_init(&table)
        callbacks.install(into: &table)
    }

    deinit {
        if connected { git_remote_disconnect(remote) }
        git_remote_free(remote)
    }

    /// Connects and returns the advertised refs (peeled `^{}` entries are dropped: peeling is
    /// done locally after the fetch).
    func listRefs() throws(ArtifactMirrorError) -> [RemoteRef] {
        var proxy = git_proxy_options()
        git_proxy_options_init(&proxy, UInt32(GIT_PROXY_OPTIONS_VERSION))
        proxy.type = GIT_PROXY_NONE
        let status = git_remote_connect(remote, GIT_DIRECTION_FETCH, &table, &proxy, nil)
        if status < 0 { throw classify(GitError.last(code: status), operation: "connect") }
        connected = true

        var heads: UnsafeMutablePointer<UnsafePointer<git_remote_head>?>?
        var count = 0
        let listed = git_remote_ls(&heads, &count, remote)
        if listed < 0 { throw classify(GitError.last(code: listed), operation: "list refs") }
        var refs: [RemoteRef] = []
        for index in 0..<count {
            guard let head = heads?[index]?.pointee, let cName = head.name else { continue }
            let name = String(cString: cName)
            if name.hasSuffix("^{}") { continue }
            refs.append(RemoteRef(name: name, oid: ObjectID(head.oid),
                                  symrefTarget: head.symref_target.map { String(cString: $0) }))
        }
        return refs
    }

    /// Downloads the objects for `refspecs` on the open connection and updates the local
    /// refs they name.
    ///
    /// Throws `GitError` when the failure points at damaged mirror data (the packer then
    /// rebuilds the mirror), `ArtifactMirrorError` otherwise.
    func fetch(refspecs: [String]) throws {
        var options = git_fetch_options()
        _ = relay_git_fetch_options_init(&options)
        options.callbacks = table
        options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE
        options.update_fetchhead = 0
        options.proxy_opts.type = GIT_PROXY_NONE
        let status = withStrArray(refspecs) { array in git_remote_download(remote, &array, &options) }
        if status < 0 { throw classifyOrCorruption(GitError.last(code: status), operation: "fetch") }
        let updated = git_remote_update_tips(remote, &table, 0, GIT_REMOTE_DOWNLOAD_TAGS_NONE, "relay: fetch")
        if updated < 0 { throw classifyOrCorruption(GitError.last(code: updated), operation: "update refs") }
    }

    private func classifyOrCorruption(_ error: GitError, operation: String) -> any Error {
        if error.indicatesCorruption, callbacks.authenticationFailure == nil, callbacks.hostKeyFailure == nil {
            return error
        }
        return classify(error, operation: operation)
    }

    /// Turns a libgit2 failure during network work into the cause an operator can act on.
    func classify(_ error: GitError, operation: String) -> ArtifactMirrorError {
        let remote = callbacks.location.identity
        if let detail = callbacks.hostKeyFailure { return .hostKeyVerificationFailed(remote: remote, detail: detail) }
        if let detail = callbacks.authenticationFailure { return .authenticationFailed(remote: remote, detail: detail) }
        let message = error.message
        let lower = message.lowercased()
        func has(_ needles: String...) -> Bool { needles.contains { lower.contains($0) } }
        if has("status code: 401", "status code: 403", "authentication required", "authentication failed",
               "too many redirects or authentication replays") {
            return .authenticationFailed(remote: remote, detail: message)
        }
        if has("status code: 404", "could not find repository", "not a git repository", "repository not found",
               "access denied or repository not exported", "no such repository", "failed to resolve path",
               "does not appear to be a git repository", "not valid: is this a git repository",
               "no such file or directory", "does not exist") {
            return .notARepository(remote: remote, detail: message)
        }
        if has("failed to connect", "connection refused", "failed to resolve", "could not resolve", "timed out",
               "network is unreachable", "no route to host", "certificate", "ssl", "tls", "early eof",
               "connection reset", "unexpected eof", "failed to start ssh session", "failed to send request",
               "broken pipe", "socket") {
            return .remoteUnreachable(remote: remote, detail: message)
        }
        return .git(operation: "\(operation) from \(remote)", message: message)
    }
}

/// Calls `body` with a `git_strarray` holding copies of `strings`.
func withStrArray<T>(_ strings: [String], _ body: (inout git_strarray) throws -> T) rethrows -> T {
    var cStrings: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { cStrings.forEach { free($0) } }
    return try cStrings.withUnsafeMutableBufferPointer { buffer in
        var array = git_strarray(strings: buffer.baseAddress, count: buffer.count)
        return try body(&array)
    }
}
