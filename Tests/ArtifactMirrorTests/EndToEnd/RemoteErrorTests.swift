import Foundation
import Testing
@testable import ArtifactMirror

/// Each remote failure is reported as its cause, against real servers.
@Suite struct RemoteErrorTests {
    final class Served: Sendable {
        let dir: TemporaryDirectory
        let root: URL
        init() throws {
            dir = try TemporaryDirectory()
            let repo = try TestRepo.create(at: dir.appending("work"))
            try repo.write("a.yaml", "a: 1\n")
            _ = try repo.commit("init")
            root = try dir.subdirectory("served")
            _ = try repo.makeBare(into: root, name: "repo.git")
            _ = try git(["init", "-q", "--bare", root.appendingPathComponent("empty.git").path])
        }
        deinit { dir.remove() }
    }

    private func expect(_ error: ArtifactMirrorError?, _ code: String, _ context: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(error?.code == code, "\(context): got \(String(describing: error))", sourceLocation: sourceLocation)
    }

    @Test func httpCredentials() async throws {
        let served = try Served()
        let http = try HTTPGitServer(root: served.root, username: "relay", password: "s3cret")
        defer { http.stop() }
        let harness = try PackHarness()
        defer { harness.remove() }
        let url = http.url(for: "repo.git")
        let wrong = await harness.packError(url, .branch("main"), credentials: GitCredentials(username: "relay", password: "nope"))
        expect(wrong, "authentication_failed", "wrong password")
        #expect(wrong?.description.contains("rejected") == true, "\(String(describing: wrong))")
        let none = await harness.packError(url, .branch("main"))
        expect(none, "authentication_failed", "no credentials")
        #expect(none?.exitCode == 4)
        let right = try await harness.pack(url, .branch("main"), credentials: GitCredentials(username: "relay", password: "s3cret"))
        #expect(right.revision.hasPrefix("main@sha1:"))
        let missing = await harness.packError(http.url(for: "missing.git"), .branch("main"),
                                              credentials: GitCredentials(username: "relay", password: "s3cret"))
        expect(missing, "not_a_repository", "http missing path")
    }

    @Test func notARepositoryEmptyAndUnreachable() async throws {
        let served = try Served()
        let daemon = try GitDaemonServer(root: served.root)
        defer { daemon.stop() }
        let harness = try PackHarness()
        defer { harness.remove() }

        expect(await harness.packError(daemon.url(for: "missing.git"), .branch("main")), "not_a_repository", "git daemon missing path")
        expect(await harness.packError(served.dir.appending("nowhere").path, .branch("main")), "not_a_repository", "missing local path")
        let plainDir = try served.dir.subdirectory("plain")
        expect(await harness.packError(plainDir.path, .branch("main")), "not_a_repository", "directory without git")

        let empty = await harness.packError(daemon.url(for: "empty.git"), .branch("main"))
        expect(empty, "empty_repository", "empty over git daemon")
        expect(await harness.packError(served.root.appendingPathComponent("empty.git").path, nil), "empty_repository", "empty local")

        let closed = try LoopbackPort.free()
        let unreachable = await harness.packError("git://127.0.0.1:\(closed)/repo.git", .branch("main"))
        expect(unreachable, "remote_unreachable", "nothing listening (git)")
        #expect(unreachable?.exitCode == 5)
        expect(await harness.packError("http://localhost:\(closed)/repo.git", .branch("main")), "remote_unreachable",
               "nothing listening (http)")
    }

    @Test func sshHostKeysAndKeys() async throws {
        let served = try Served()
        let ssh = try SSHGitServer(root: served.root)
        defer { ssh.stop() }
        let harness = try PackHarness()
        defer { harness.remove() }
        let url = ssh.url(for: "repo.git")
        let good = GitCredentials(sshPrivateKey: ssh.clientPrivateKey.path, sshPublicKey: ssh.clientPublicKey.path,
                                  knownHosts: ssh.knownHostsFile.path)

        // Unknown host: an empty known_hosts.
        let emptyKnownHosts = served.dir.appending("known_hosts_empty")
        try Data().write(to: emptyKnownHosts)
        var unknown = good
        unknown.knownHosts = emptyKnownHosts.path
        let unknownError = await harness.packError(url, .branch("main"), credentials: unknown)
        expect(unknownError, "host_key_verification_failed", "unknown host")
        #expect(unknownError?.description.contains("ssh-keyscan") == true)

        // Changed host key: the recorded key is another one.
        let other = try SSHGitServer(root: served.root)
        defer { other.stop() }
        let forged = served.dir.appending("known_hosts_forged")
        let line = "[127.0.0.1]:\(ssh.port) \(other.hostKeyType) \(other.hostKeyBase64)\n"
        try Data(line.utf8).write(to: forged)
        var mismatched = good
        mismatched.knownHosts = forged.path
        let mismatch = await harness.packError(url, .branch("main"), credentials: mismatched)
        expect(mismatch, "host_key_verification_failed", "changed host key")
        #expect(mismatch?.description.contains("does not match") == true)

        // A key the server does not know.
        var wrongKey = good
        wrongKey.sshPrivateKey = other.clientPrivateKey.path
        wrongKey.sshPublicKey = other.clientPublicKey.path
        expect(await harness.packError(url, .branch("main"), credentials: wrongKey), "authentication_failed", "unknown client key")

        expect(await harness.packError(ssh.url(for: "missing.git"), .branch("main"), credentials: good),
               "not_a_repository", "ssh missing path")
        let result = try await harness.pack(url, .branch("main"), credentials: good)
        #expect(result.revision.hasPrefix("main@sha1:"))
    }
}
