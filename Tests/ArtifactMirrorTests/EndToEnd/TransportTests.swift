import Foundation
import Testing
@testable import ArtifactMirror

/// The same commit packed over every transport, against real servers on loopback: the
/// digest must not depend on how the objects arrived.
@Suite struct TransportTests {
    final class Served: Sendable {
        let dir: TemporaryDirectory
        let root: URL
        let commit: String
        init() throws {
            dir = try TemporaryDirectory()
            let fixture = try FixtureRepository.create(at: dir.appending("work"))
            commit = fixture.commit
            root = try dir.subdirectory("served")
            _ = try fixture.repo.makeBare(into: root, name: "fixture.git")
        }
        deinit { dir.remove() }
    }

    @Test func everyTransportGivesTheSameArtifact() async throws {
        let served = try Served()
        let daemon = try GitDaemonServer(root: served.root)
        defer { daemon.stop() }
        let http = try HTTPGitServer(root: served.root, username: "relay", password: "s3cret")
        defer { http.stop() }
        let tls = try TestTLS.shared()  // libgit2 (mbedTLS) trusts one CA bundle per process
        let https = try HTTPGitServer(root: served.root, username: "relay", password: "s3cret", tls: tls)
        defer { https.stop() }
        try GitRuntime.useCertificateAuthorities(file: tls.caFile.path)

        let bare = served.root.appendingPathComponent("fixture.git").path
        let password = GitCredentials(username: "relay", password: "s3cret")
        let remotes: [(String, GitCredentials)] = [
            (bare, GitCredentials()),
            ("file://" + bare, GitCredentials()),
            (daemon.url(for: "fixture.git"), GitCredentials()),
            (http.url(for: "fixture.git"), password),
            (https.url(for: "fixture.git"), password),
        ]
        var digests: Set<String> = []
        for (remote, credentials) in remotes {
            let harness = try PackHarness()
            defer { harness.remove() }
            let result = try await harness.pack(remote, .branch("main"), credentials: credentials)
            #expect(result.revision == "main@sha1:\(served.commit)", "\(remote)")
            digests.insert(result.digest)
        }
        #expect(digests.count == 1, "\(digests)")
    }

    @Test func sshWithKeyAndKnownHosts() async throws {
        let served = try Served()
        let ssh = try SSHGitServer(root: served.root)
        defer { ssh.stop() }
        let credentials = GitCredentials(sshPrivateKey: ssh.clientPrivateKey.path, sshPublicKey: ssh.clientPublicKey.path,
                                         knownHosts: ssh.knownHostsFile.path)
        let harness = try PackHarness()
        defer { harness.remove() }
        let result = try await harness.pack(ssh.url(for: "fixture.git"), .branch("main"), credentials: credentials)
        #expect(result.revision == "main@sha1:\(served.commit)")

        let local = try PackHarness()
        defer { local.remove() }
        let reference = try await local.pack(served.root.appendingPathComponent("fixture.git").path, .branch("main"))
        #expect(result.digest == reference.digest)
    }
}
