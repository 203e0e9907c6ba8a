import Foundation
import Testing
@testable import ArtifactMirror

/// Every kind of `GitRepository.spec.ref`, resolved against a real `git daemon` on loopback,
/// with Flux's revision strings.
@Suite struct ReferenceTests {
    /// A history with branches, lightweight and annotated tags, semver tags with a
    /// pre-release, and a pull-request ref, served by git daemon.
    final class History: Sendable {
        let dir: TemporaryDirectory
        let server: GitDaemonServer
        let url: String
        let first: String, second: String, third: String, feature: String, pull: String

        init() throws {
            dir = try TemporaryDirectory()
            let repo = try TestRepo.create(at: dir.appending("work"))
            try repo.write("app.yaml", "version: 1\n")
            first = try repo.commit("one")
            try repo.tag("v1.0.0")
            try repo.write("app.yaml", "version: 1.1\n")
            second = try repo.commit("two")
            try repo.tag("v1.1.0", annotated: true, message: "release 1.1")
            try repo.tag("not-semver")
            try repo.write("app.yaml", "version: 2-rc\n")
            third = try repo.commit("three")
            try repo.tag("v2.0.0-rc.1", annotated: true, message: "rc")
            try repo.checkout("feature/x", create: true)
            try repo.write("feature.yaml", "f: 1\n")
            feature = try repo.commit("feature")
            try repo.checkout("main")
            try repo.checkout("pr", create: true)
            try repo.write("pr.yaml", "pr: 1\n")
            pull = try repo.commit("pull request")
            try repo.checkout("main")
            let root = try dir.subdirectory("served")
            let bare = try repo.makeBare(into: root, name: "history.git")
            _ = try git(["update-ref", "refs/pull/7/head", pull], in: bare)
            _ = try git(["branch", "-D", "pr"], in: bare)
            server = try GitDaemonServer(root: root)
            url = server.url(for: "history.git")
        }

        deinit {
            server.stop()
            dir.remove()
        }
    }

    @Test func branchTagCommitAndRefNameRevisions() async throws {
        let history = try History()
        let harness = try PackHarness()
        defer { harness.remove() }
        let cases: [(GitReference, String)] = [
            (.branch("main"), "main@sha1:\(history.third)"),
            (.branch("feature/x"), "feature/x@sha1:\(history.feature)"),
            (.tag("v1.0.0"), "v1.0.0@sha1:\(history.first)"),
            (.tag("v1.1.0"), "v1.1.0@sha1:\(history.second)"),  // annotated: peeled to the commit
            (.commit(history.second, branch: nil), "sha1:\(history.second)"),
            (.commit(history.first, branch: "main"), "main@sha1:\(history.first)"),
            (.name("refs/pull/7/head"), "refs/pull/7/head@sha1:\(history.pull)"),
            (.name("refs/heads/main"), "refs/heads/main@sha1:\(history.third)"),
        ]
        for (reference, revision) in cases {
            let result = try await harness.pack(history.url, reference)
            #expect(result.revision == revision, "\(reference)")
            #expect(result.commit == String(revision.suffix(40)))
            let report = try TarballReport.read(URL(fileURLWithPath: result.path))
            let app = report.entries.first { $0.name == "app.yaml" }
            let expectedBlob = try git(["rev-parse", "\(result.commit):app.yaml"], in: history.dir.appending("work"))
            #expect(app?.gitBlobId == expectedBlob, "content of \(reference)")
        }
    }

    @Test func semverPicksTheHighestMatchingTag() async throws {
        let history = try History()
        let harness = try PackHarness()
        defer { harness.remove() }
        let cases: [(String, String)] = [
            (">=1.0.0", "v1.1.0@sha1:\(history.second)"),  // the pre-release is not eligible
            ("~1.0", "v1.0.0@sha1:\(history.first)"),
            ("1.0.x || 1.1.x", "v1.1.0@sha1:\(history.second)"),
            (">=2.0.0-0", "v2.0.0-rc.1@sha1:\(history.third)"),  // the range asks for pre-releases
            ("<1.1.0", "v1.0.0@sha1:\(history.first)"),
        ]
        for (range, revision) in cases {
            let result = try await harness.pack(history.url, .semver(range))
            #expect(result.revision == revision, "semver \(range)")
        }
        guard case .noMatchingTag(let range, let seen)? = await harness.packError(history.url, .semver(">=3.0.0")) else {
            Issue.record("expected no matching tag")
            return
        }
        #expect(range == ">=3.0.0" && seen == 4)
        guard case .invalidSemverRange? = await harness.packError(history.url, .semver(">=banana")) else {
            Issue.record("expected an invalid range error")
            return
        }
    }

    @Test func unknownReferencesNameTheCause() async throws {
        let history = try History()
        let harness = try PackHarness()
        defer { harness.remove() }
        let unknown: [GitReference] = [
            .branch("nope"), .tag("v9.9.9"), .name("refs/pull/99/head"),
            .commit(String(repeating: "ab", count: 20), branch: nil),
            .commit(history.feature, branch: "main"),  // exists, but not on main
        ]
        for reference in unknown {
            let error = await harness.packError(history.url, reference)
            guard case .unknownReference? = error else {
                Issue.record("\(reference): expected unknown ref, got \(String(describing: error))")
                continue
            }
            #expect(error?.exitCode == 3)
        }
        // Flux's default is branch master; this remote has none, and the error says what it has.
        let error = await harness.packError(history.url, nil)
        #expect(error?.description.contains("default branch is 'main'") == true, "\(String(describing: error))")
    }

    @Test func defaultReferenceIsMaster() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"), initialBranch: "master")
        try repo.write("a.yaml", "a: 1\n")
        let commit = try repo.commit("init")
        let harness = try PackHarness()
        defer { harness.remove() }
        let result = try await harness.pack(dir.appending("repo").path)
        #expect(result.revision == "master@sha1:\(commit)")
    }
}
