/// Which revision to pack, with the same choices and meaning as Flux's
/// `GitRepository.spec.ref`.
public enum GitReference: Sendable, Equatable, CustomStringConvertible {
    case branch(String)
    case tag(String)
    /// Highest tag satisfying a semver range (Masterminds semver v3 rules).
    case semver(String)
    /// A pinned commit, optionally with the branch it must be on (which then names the revision).
    case commit(String, branch: String?)
    /// A full ref name such as `refs/pull/420/head`.
    case name(String)

    /// Flux's default when `.spec.ref` is empty.
    public static let fluxDefault = GitReference.branch("master")

    /// The Flux revision string for `commit` resolved from this reference (spec §2.1).
    /// For `.semver`, `resolvedName` is the chosen tag.
    public func revision(commit: ObjectID, resolvedName: String? = nil) -> String {
        let hash = "sha1:\(commit.hex)"
        switch self {
        case .branch(let name), .tag(let name), .name(let name):
            return "\(name)@\(hash)"
        case .semver(let range):
            return "\(resolvedName ?? range)@\(hash)"
        case .commit(_, let branch):
            return branch.map { "\($0)@\(hash)" } ?? hash
        }
    }

    public var description: String {
        switch self {
        case .branch(let name): "branch \(name)"
        case .tag(let name): "tag \(name)"
        case .semver(let range): "semver \(range)"
        case .commit(let sha, let branch): "commit \(sha)" + (branch.map { " on branch \($0)" } ?? "")
        case .name(let name): "ref \(name)"
        }
    }
}
