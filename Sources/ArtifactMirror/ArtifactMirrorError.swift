/// Everything that can go wrong while turning a Git revision into an artifact, phrased for
/// the operator who has to fix it.
public enum ArtifactMirrorError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The branch, tag, ref or commit does not exist on the remote.
    case unknownReference(String, hint: String)
    /// No tag satisfies the semver range.
    case noMatchingTag(range: String, tagsSeen: Int)
    /// The semver range itself does not parse.
    case invalidSemverRange(String, reason: String)
    /// The remote rejected the credentials, or wanted some and none were given.
    case authenticationFailed(remote: String, detail: String)
    /// SSH host key not in known_hosts, or different from it.
    case hostKeyVerificationFailed(remote: String, detail: String)
    /// Nothing answered, DNS failed, TLS failed, or the connection broke.
    case remoteUnreachable(remote: String, detail: String)
    /// Something answered, but there is no Git repository at that path.
    case notARepository(remote: String, detail: String)
    /// The repository exists but has no branches or tags.
    case emptyRepository(remote: String)
    /// Bad flags, unreadable files and the like.
    case invalidArgument(String)
    /// A local file operation failed (the store or the cache).
    case storage(path: String, detail: String)
    /// Any other libgit2 failure, with libgit2's message.
    case git(operation: String, message: String)

    public var description: String {
        switch self {
        case .unknownReference(let ref, let hint):
            return "unknown ref: \(ref) does not exist on the remote" + (hint.isEmpty ? "" : "; \(hint)")
        case .noMatchingTag(let range, let seen):
            return "no tag matches semver range '\(range)' (\(seen) tag\(seen == 1 ? "" : "s") on the remote); "
                + "pre-release tags match only when the range itself names a pre-release, e.g. '>=1.0.0-0'"
        case .invalidSemverRange(let range, let reason):
            return "invalid semver range '\(range)': \(reason)"
        case .authenticationFailed(let remote, let detail):
            return "authentication to \(remote) failed: \(detail); check --username/--password-file/--token-file "
                + "(https) or --ssh-key (ssh)"
        case .hostKeyVerificationFailed(let remote, let detail):
            return "SSH host key verification for \(remote) failed: \(detail)"
        case .remoteUnreachable(let remote, let detail):
            return "cannot reach \(remote): \(detail); check the URL, DNS, firewall and (for https) --ca-file"
        case .notARepository(let remote, let detail):
            return "\(remote) is not a Git repository (or is not exported to this user): \(detail)"
        case .emptyRepository(let remote):
            return "\(remote) is an empty repository: it has no branches or tags yet; push a commit first"
        case .invalidArgument(let message):
            return message
        case .storage(let path, let detail):
            return "storage error at \(path): \(detail)"
        case .git(let operation, let message):
            return "\(operation) failed: \(message)"
        }
    }

    /// A stable machine-readable name for scripts (`--json` output) and exit codes.
    public var code: String {
        switch self {
        case .unknownReference: "unknown_ref"
        case .noMatchingTag: "no_matching_tag"
        case .invalidSemverRange: "invalid_semver_range"
        case .authenticationFailed: "authentication_failed"
        case .hostKeyVerificationFailed: "host_key_verification_failed"
        case .remoteUnreachable: "remote_unreachable"
        case .notARepository: "not_a_repository"
        case .emptyRepository: "empty_repository"
        case .invalidArgument: "invalid_argument"
        case .storage: "storage"
        case .git: "git"
        }
    }

    /// Process exit status for the CLI: one value per class of cause.
    public var exitCode: Int32 {
        switch self {
        case .invalidArgument, .invalidSemverRange: 2
        case .unknownReference, .noMatchingTag: 3
        case .authenticationFailed, .hostKeyVerificationFailed: 4
        case .remoteUnreachable: 5
        case .notARepository, .emptyRepository: 6
        case .storage: 7
        case .git: 1
        }
    }
}
