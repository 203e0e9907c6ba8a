/// A reference resolved to a commit, with its Flux revision string.
struct ResolvedRevision {
    var commit: ObjectID
    var revision: String
}

/// Resolves a `GitReference` against a remote and fetches exactly what it needs into the
/// mirror: one branch, one tag, or (for a bare commit not yet mirrored) all branches and tags.
struct ReferenceResolver {
    let repository: GitRepository
    let session: RemoteSession
    let location: RemoteLocation

    func resolve(_ reference: GitReference) throws -> ResolvedRevision {
        // A commit that is already mirrored needs no network: commits are immutable.
        if case .commit(let sha, nil) = reference, let id = ObjectID(hex: sha), try repository.hasCommit(id) {
            return ResolvedRevision(commit: id, revision: reference.revision(commit: id))
        }

        let refs = try session.listRefs()
        let names = Set(refs.map(\.name))
        guard refs.contains(where: { $0.name.hasPrefix("refs/heads/") || $0.name.hasPrefix("refs/tags/") }) else {
            throw ArtifactMirrorError.emptyRepository(remote: location.identity)
        }

        switch reference {
        case .branch(let branch):
            let ref = "refs/heads/\(branch)"
            guard names.contains(ref) else {
                throw ArtifactMirrorError.unknownReference("branch '\(branch)'", hint: branchHint(refs, asked: branch))
            }
            let commit = try fetchAndPeel(ref)
            return ResolvedRevision(commit: commit, revision: reference.revision(commit: commit))

        case .tag(let tag):
            let ref = "refs/tags/\(tag)"
            guard names.contains(ref) else {
                throw ArtifactMirrorError.unknownReference("tag '\(tag)'", hint: tagHint(refs))
            }
            let commit = try fetchAndPeel(ref)
            return ResolvedRevision(commit: commit, revision: reference.revision(commit: commit))

        case .semver(let range):
            let constraint: SemVerConstraint
            // Flux 2.9 resolves Masterminds semver ≥ v3.4.0 (required by fluxcd/pkg/version), where
            // one pre-release comparator admits pre-releases for its whole `||` alternative.
            do { constraint = try SemVerConstraint(range, prereleasePolicy: .perAlternative) } catch {
                throw ArtifactMirrorError.invalidSemverRange(range, reason: "\(error)")
            }
            let tags = refs.compactMap { $0.name.hasPrefix("refs/tags/") ? String($0.name.dropFirst(10)) : nil }
            guard let chosen = SemVerTagSelector.highestTag(matching: constraint, among: tags) else {
                throw ArtifactMirrorError.noMatchingTag(range: range, tagsSeen: tags.count)
            }
            let commit = try fetchAndPeel("refs/tags/\(chosen.tag)")
            return ResolvedRevision(commit: commit, revision: reference.revision(commit: commit, resolvedName: chosen.tag))

        case .name(let name):
            guard names.contains(name) else {
                throw ArtifactMirrorError.unknownReference("ref '\(name)'",
                    hint: name.hasPrefix("refs/") ? "" : "a ref name is a full name such as refs/heads/main or refs/pull/1/head")
            }
            let commit = try fetchAndPeel(name)
            return ResolvedRevision(commit: commit, revision: reference.revision(commit: commit))

        case .commit(let sha, let branch):
            guard let id = ObjectID(hex: sha) else {
                throw ArtifactMirrorError.invalidArgument("commit '\(sha)' is not a full 40-hex SHA-1")
            }
            if let branch {
                let ref = "refs/heads/\(branch)"
                guard names.contains(ref) else {
                    throw ArtifactMirrorError.unknownReference("branch '\(branch)'", hint: branchHint(refs, asked: branch))
                }
                let tip = try fetchAndPeel(ref)
                guard try repository.hasCommit(id), try repository.isAncestor(id, of: tip) else {
                    throw ArtifactMirrorError.unknownReference("commit \(sha) on branch '\(branch)'",
                        hint: "the commit is not in the history of \(branch)")
                }
            } else {
                try session.fetch(refspecs: ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
                guard try repository.hasCommit(id) else {
                    throw ArtifactMirrorError.unknownReference("commit \(sha)",
                        hint: "it is not reachable from any branch or tag of the remote")
                }
            }
            return ResolvedRevision(commit: id, revision: reference.revision(commit: id))
        }
    }

    private func fetchAndPeel(_ ref: String) throws -> ObjectID {
        try session.fetch(refspecs: ["+\(ref):\(ref)"])
        guard let commit = try repository.commit(forReference: ref) else {
            throw ArtifactMirrorError.git(operation: "fetch \(ref)", message: "the ref was advertised but not fetched")
        }
        return commit
    }

    private func branchHint(_ refs: [RemoteRef], asked: String) -> String {
        let branches = refs.compactMap { $0.name.hasPrefix("refs/heads/") ? String($0.name.dropFirst(11)) : nil }
        var hint = ""
        if let head = refs.first(where: { $0.name == "HEAD" })?.symrefTarget, head.hasPrefix("refs/heads/") {
            hint = "the remote's default branch is '\(head.dropFirst(11))'"
            if asked == "master" { hint += " (Flux defaults to 'master' when no ref is given: pass --branch)" }
            hint += "; "
        }
        return hint + "branches: " + Self.sample(branches)
    }

    private func tagHint(_ refs: [RemoteRef]) -> String {
        let tags = refs.compactMap { $0.name.hasPrefix("refs/tags/") ? String($0.name.dropFirst(10)) : nil }
        return tags.isEmpty ? "the remote has no tags" : "tags: " + Self.sample(tags)
    }

    private static func sample(_ names: [String]) -> String {
        let sorted = names.sorted()
        return sorted.prefix(10).joined(separator: ", ") + (sorted.count > 10 ? ", … (\(sorted.count) in all)" : "")
    }
}
