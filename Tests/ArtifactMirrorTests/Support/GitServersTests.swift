// Proves the test git servers work, using the real git CLI as the client.

import Foundation
import Testing

@Suite("Git test servers")
struct GitServersTests {
    /// A served repository: `<tmp>/served/project.git` (bare) built from a
    /// work tree with two branches, a lightweight and an annotated tag, an
    /// executable file and a symlink.
    struct Fixture {
        let tmp: TemporaryDirectory
        let root: URL
        let main: String
        let feature: String
    }

    static func makeFixture() throws -> Fixture {
        let tmp = try TemporaryDirectory()
        do {
            let repo = try TestRepo.create(at: tmp.appending("work"))
            try repo.write("README.md", "# project\n")
            try repo.write("bin/run.sh", "#!/bin/sh\necho hi\n", executable: true)
            try repo.symlink("docs", target: "README.md")
            try repo.commit("initial")
            try repo.tag("v1.0.0", annotated: true, message: "release 1.0.0")
            try repo.checkout("feature", create: true)
            try repo.write("feature.txt", Data([0x00, 0x01, 0xFF]))
            let feature = try repo.commit("feature work")
            try repo.checkout("main")
            try repo.write("README.md", "# project\n\nmore\n")
            let main = try repo.commit("second")
            try repo.tag("latest")
            let root = try tmp.subdirectory("served")
            try repo.makeBare(into: root, name: "project.git")
            return Fixture(tmp: tmp, root: root, main: main, feature: feature)
        } catch {
            tmp.remove()
            throw error
        }
    }

    /// `git ls-remote` output as [ref: sha].
    static func lsRemote(_ url: String, environment: [String: String] = [:]) throws -> [String: String] {
        let out = try git(["ls-remote", url], environment: environment, timeout: 20)
        var refs: [String: String] = [:]
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            if parts.count == 2 { refs[String(parts[1])] = String(parts[0]) }
        }
        return refs
    }

    /// Clone `url` bare into a fresh directory and check branch tips.
    static func cloneAndCheck(_ url: String, fixture: Fixture, environment: [String: String] = [:]) throws {
        let dest = fixture.tmp.appending("clone-\(UUID().uuidString)")
        try git(["clone", "-q", "--bare", url, dest.path], environment: environment, timeout: 20)
        #expect(try git(["rev-parse", "refs/heads/main"], in: dest) == fixture.main)
        #expect(try git(["rev-parse", "refs/heads/feature"], in: dest) == fixture.feature)
        #expect(try git(["cat-file", "-t", "refs/tags/v1.0.0"], in: dest) == "tag")
        #expect(try git(["rev-parse", "HEAD"], in: dest) == fixture.main)
    }

    // MARK: - Helpers

    @Test func testRepoIsDeterministic() throws {
        let a = try Self.makeFixture()
        defer { a.tmp.remove() }
        let b = try Self.makeFixture()
        defer { b.tmp.remove() }
        #expect(a.main == b.main)
        #expect(a.feature == b.feature)
        // Fixed identity and clock: the SHA is the same on every machine and run.
        #expect(a.main == "cc9206d0a425e38e73c13db9fdfb1bbac83198e3")
        let work = a.tmp.appending("work")
        #expect(try git(["log", "-1", "--format=%an <%ae> %at %ct", "main"], in: work)
                == "Relay Test <relay-test@example.invalid> 1704067380 1704067380")
        #expect(try git(["ls-tree", "HEAD", "docs", "bin/run.sh"], in: work)
                .contains("120000 blob"))
        #expect(try git(["ls-tree", "HEAD", "bin/run.sh"], in: work).hasPrefix("100755 blob"))
    }

    @Test func commitStagesDeletionsButKeepsGitlinks() throws {
        let tmp = try TemporaryDirectory()
        defer { tmp.remove() }
        let repo = try TestRepo.create(at: tmp.appending("repo"))
        try repo.write("keep.txt", "k\n")
        try repo.write("gone.txt", "g\n")
        try repo.git(["update-index", "--add", "--cacheinfo",
                      "160000,1111111111111111111111111111111111111111,vendor/lib"])
        try repo.commit("one")
        try repo.remove("gone.txt")
        try repo.write("new.txt", "n\n")
        try repo.commit("two")
        let tree = try repo.git(["ls-tree", "-r", "HEAD"])
        #expect(tree.contains("160000 commit 1111111111111111111111111111111111111111\tvendor/lib"), "\(tree)")
        #expect(tree.contains("\tkeep.txt") && tree.contains("\tnew.txt") && !tree.contains("gone.txt"), "\(tree)")
    }

    @Test func temporaryDirectoriesAreUniqueAndRemoved() async throws {
        let kept = try TemporaryDirectory.with { dir -> URL in
            try Data("x".utf8).write(to: dir.appending("file"))
            return dir.url
        }
        let keptAsync = try await TemporaryDirectory.with { dir async throws -> URL in
            try await Task.sleep(nanoseconds: 1_000)
            return dir.url
        }
        #expect(kept != keptAsync)
        #expect(!FileManager.default.fileExists(atPath: kept.path))
        #expect(!FileManager.default.fileExists(atPath: keptAsync.path))
    }

    @Test func failedStartupReportsServerOutput() throws {
        let tmp = try TemporaryDirectory()
        defer { tmp.remove() }
        #expect {
            _ = try startServer(name: "broken", timeout: 2) { _ in
                try BackgroundProcess(
                    name: "broken", executable: "/bin/sh",
                    arguments: ["-c", "echo 'boom: no config' >&2; exit 3"],
                    logFile: tmp.appending("broken.log"))
            }
        } throws: { error in
            "\(error)".contains("boom: no config") && "\(error)".contains("exited")
        }
    }

    // MARK: - git daemon

    @Test func gitDaemonServesCloneAndLsRemote() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let server = try GitDaemonServer(root: fixture.root)
        defer { server.stop() }
        #expect(server.url(for: "project.git") == "git://127.0.0.1:\(server.port)/project.git")
        let refs = try Self.lsRemote(server.url(for: "project.git"))
        #expect(refs["refs/heads/main"] == fixture.main)
        #expect(refs["refs/tags/v1.0.0^{}"] != nil)
        try Self.cloneAndCheck(server.url(for: "project.git"), fixture: fixture)

        let missing = try gitResult(["ls-remote", server.url(for: "missing.git")], timeout: 20)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("access denied or repository not exported"))
    }

    @Test func pushToBareUpdatesServedRepository() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let server = try GitDaemonServer(root: fixture.root)
        defer { server.stop() }
        let repo = try TestRepo.create(at: fixture.tmp.appending("work2"))
        try repo.write("a.txt", "a\n")
        let first = try repo.commit("first")
        try repo.branch("topic")
        try repo.push(toBare: fixture.root.appendingPathComponent("project.git"))
        let refs = try Self.lsRemote(server.url(for: "project.git"))
        #expect(refs["refs/heads/main"] == first)
        #expect(refs["refs/heads/topic"] == first)
        #expect(refs["refs/heads/feature"] == nil)  // pruned: not in the pushing repo
        #expect(refs["refs/tags/v1.0.0"] == nil)
    }

    @Test func stoppedServerNoLongerAccepts() throws {
        let tmp = try TemporaryDirectory()
        defer { tmp.remove() }
        let server = try GitDaemonServer(root: tmp.url)
        #expect(LoopbackPort.isAccepting(server.port))
        server.stop()
        server.stop()  // idempotent
        #expect(!LoopbackPort.isAccepting(server.port))
        #expect(!FileManager.default.fileExists(atPath: server.directory.path))
    }

    // MARK: - HTTP

    @Test func httpAnonymousClone() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let server = try HTTPGitServer(root: fixture.root)
        defer { server.stop() }
        #expect(server.url(for: "project.git") == "http://localhost:\(server.port)/git/project.git")
        try Self.cloneAndCheck(server.url(for: "project.git"), fixture: fixture)
        let missing = try gitResult(["ls-remote", server.url(for: "missing.git")], timeout: 20)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("not found"))
    }

    @Test func httpBasicAuth() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let server = try HTTPGitServer(root: fixture.root, username: "alice", password: "s3cret p@ss")
        defer { server.stop() }
        let good = server.url(for: "project.git", username: "alice", password: "s3cret p@ss")
        try Self.cloneAndCheck(good, fixture: fixture)

        let wrong = server.url(for: "project.git", username: "alice", password: "wrong")
        let denied = try gitResult(["ls-remote", wrong], timeout: 20)
        #expect(denied.status != 0)
        #expect(denied.stderr.contains("Authentication failed"), "\(denied.stderr)")

        let anonymous = try gitResult(["ls-remote", server.url(for: "project.git")], timeout: 20)
        #expect(anonymous.status != 0)
        #expect(anonymous.stderr.contains("could not read Username"), "\(anonymous.stderr)")
    }

    @Test func httpsWithTestCAAndAuth() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let tls = try TestTLS.generate(in: fixture.tmp.appending("tls"))
        let server = try HTTPGitServer(root: fixture.root, username: "bob", password: "pw", tls: tls)
        defer { server.stop() }
        #expect(server.url(for: "project.git") == "https://localhost:\(server.port)/git/project.git")
        let url = server.url(for: "project.git", username: "bob", password: "pw")
        try Self.cloneAndCheck(url, fixture: fixture, environment: server.gitClientEnvironment)

        // Without trusting the test CA the TLS handshake must fail.
        let untrusted = try gitResult(["ls-remote", url], timeout: 20)
        #expect(untrusted.status != 0)
        #expect(untrusted.stderr.contains("certificate"), "\(untrusted.stderr)")

        // The certificate really is for localhost and 127.0.0.1, issued by the CA.
        let text = try runProcess("/usr/bin/openssl", ["x509", "-in", tls.certFile.path, "-noout", "-text"]).stdout
        #expect(text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"))
        #expect(try runProcess("/usr/bin/openssl", ["verify", "-CAfile", tls.caFile.path, tls.certFile.path])
                .stdout.contains("OK"))
    }

    @Test func sharedTLSIsGeneratedOnce() throws {
        let a = try TestTLS.shared()
        let b = try TestTLS.shared()
        #expect(a.caFile == b.caFile)
        #expect(FileManager.default.fileExists(atPath: a.certFile.path))
    }

    // MARK: - SSH

    @Test func sshCloneWithGeneratedKeys() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let server = try SSHGitServer(root: fixture.root)
        defer { server.stop() }
        #expect(server.url(for: "project.git")
                == "ssh://\(server.username)@127.0.0.1:\(server.port)\(fixture.root.path)/project.git")
        #expect(server.hostKeyType == "ecdsa-sha2-nistp256")
        #expect(server.hostKeyLibgit2RawType == 3)
        #expect(server.hostKeyBlob == Data(base64Encoded: server.hostKeyBase64))
        let knownHosts = try String(contentsOf: server.knownHostsFile, encoding: .utf8)
        #expect(knownHosts.contains("[127.0.0.1]:\(server.port) ecdsa-sha2-nistp256 \(server.hostKeyBase64)"))
        #expect(knownHosts.contains("[localhost]:\(server.port) ecdsa-sha2-nistp256 \(server.hostKeyBase64)"))
        let privateKey = try String(contentsOf: server.clientPrivateKey, encoding: .utf8)
        #expect(privateKey.hasPrefix("-----BEGIN EC PRIVATE KEY-----"))

        try Self.cloneAndCheck(server.url(for: "project.git"), fixture: fixture,
                               environment: server.gitClientEnvironment)
        let missing = try gitResult(["ls-remote", server.url(for: "missing.git")],
                                    environment: server.gitClientEnvironment, timeout: 20)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("does not appear to be a git repository"), "\(missing.stderr)")
    }

    @Test func sshRejectsUnknownClientKeyAndWrongHostKey() throws {
        let fixture = try Self.makeFixture()
        defer { fixture.tmp.remove() }
        let server = try SSHGitServer(root: fixture.root, hostKeyType: .ed25519, clientKeyType: .ed25519)
        defer { server.stop() }
        #expect(server.hostKeyType == "ssh-ed25519")
        #expect(server.hostKeyLibgit2RawType == 6)
        let refs = try Self.lsRemote(server.url(for: "project.git"), environment: server.gitClientEnvironment)
        #expect(refs["refs/heads/main"] == fixture.main)

        let stranger = fixture.tmp.appending("stranger")
        try runProcess("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", stranger.path])
        let wrongKey = server.gitSSHCommand.replacingOccurrences(
            of: server.clientPrivateKey.path, with: stranger.path)
        let denied = try gitResult(["ls-remote", server.url(for: "project.git")],
                                   environment: ["GIT_SSH_COMMAND": wrongKey], timeout: 20)
        #expect(denied.status != 0)
        #expect(denied.stderr.contains("Permission denied (publickey)"), "\(denied.stderr)")

        let emptyKnownHosts = fixture.tmp.appending("known_hosts_other")
        try "[127.0.0.1]:\(server.port) \(try String(contentsOf: stranger.appendingPathExtension("pub"), encoding: .utf8))"
            .write(to: emptyKnownHosts, atomically: true, encoding: .utf8)
        let wrongHost = server.gitSSHCommand.replacingOccurrences(
            of: server.knownHostsFile.path, with: emptyKnownHosts.path)
        let mismatch = try gitResult(["ls-remote", server.url(for: "project.git")],
                                     environment: ["GIT_SSH_COMMAND": wrongHost], timeout: 20)
        #expect(mismatch.status != 0)
        #expect(mismatch.stderr.contains("HOST IDENTIFICATION HAS CHANGED")
                || mismatch.stderr.contains("Host key verification failed"), "\(mismatch.stderr)")
    }
}
