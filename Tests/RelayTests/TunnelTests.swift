import Foundation
import Testing

/// relay-server and relay-agent as real processes on loopback with real TLS.
@Suite struct TunnelTests {
    static func makeRepo(_ dir: TemporaryDirectory, _ name: String, files: [String: String]) throws -> TestRepo {
        let repo = try TestRepo.create(at: dir.appending(name))
        for (path, content) in files { try repo.write(path, content) }
        _ = try repo.commit("initial")
        return repo
    }

    @Test func artifactIsDeliveredWithTheDigestArtifactMirrorComputesAndWebhooksPushNewCommits() throws {
        let dir = try TemporaryDirectory(prefix: "tunnel")
        defer { dir.remove() }
        let repo = try Self.makeRepo(dir, "podinfo", files: ["apps/deploy.yaml": "kind: Deployment\n", "README.md": "hi\n"])
        let source = RelayHarness.Source(name: "podinfo", repo: repo, branch: "main")
        let harness = try RelayHarness(sources: [source], agents: [.init(name: "edge-1", token: "t-edge-1", sources: ["podinfo"])], dir: dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        try harness.startAgent("edge-1")
        try harness.waitUntil("first artifact") { try !harness.published("edge-1").isEmpty }

        // The agent holds exactly what artifact-mirror packs from the same commit.
        let reference = try runProcess(Binaries.artifactMirror, [
            "pack", repo.url.path, "--branch", "main", "--cache", dir.appending("am-cache").path,
            "--output", dir.appending("am-store").path, "--json"])
        let packed = try JSONSerialization.jsonObject(with: Data(reference.stdout.utf8)) as! [String: Any]
        let first = try #require(try harness.published("edge-1").first)
        #expect(first.digest == packed["digest"] as? String)
        #expect(first.revision == packed["revision"] as? String)
        #expect(first.revision == "main@sha1:\(try repo.head())")
        // The delivery is acknowledged back to the relay.
        try harness.waitUntil("delivery acknowledged") { harness.relayLog.contains("delivered") }

        // A commit plus a GitLab push webhook reaches the agent.
        try repo.write("apps/service.yaml", "kind: Service\n")
        let second = try repo.commit("second")
        let response = try harness.pushWebhook(source: source)
        #expect(response.stdout.hasSuffix("202"), "\(response.stdout)")
        #expect(response.stdout.contains("podinfo"))
        let seconds = try harness.waitUntil("webhook revision at the agent", timeout: 10) {
            try harness.published("edge-1").contains { $0.revision == "main@sha1:\(second)" }
        }
        #expect(seconds < 5, "webhook → agent took \(seconds) s")

        // A webhook with the wrong token is refused and triggers nothing.
        let refused = try harness.pushWebhook(source: source, token: "nope")
        #expect(refused.stdout.hasSuffix("401"))
    }

    @Test func wrongTokenIsRefusedBeforeAnyByteAndUngrantedSourcesNeverArrive() throws {
        let dir = try TemporaryDirectory(prefix: "tunnel")
        defer { dir.remove() }
        let a = RelayHarness.Source(name: "team-a", repo: try Self.makeRepo(dir, "a", files: ["a.yaml": "a: 1\n"]), branch: "main")
        let b = RelayHarness.Source(name: "team-b", repo: try Self.makeRepo(dir, "b", files: ["b.yaml": "b: 1\n"]), branch: "main")
        let harness = try RelayHarness(sources: [a, b], agents: [
            .init(name: "edge-a", token: "token-a", sources: ["team-a"]),
            .init(name: "edge-b", token: "token-b", sources: ["team-b"]),
            .init(name: "intruder", token: "token-i", sources: []),
        ], dir: dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        try harness.startAgent("edge-a")
        try harness.startAgent("edge-b")
        try harness.startAgent("intruder", token: "not-the-right-token")
        try harness.waitUntil("both agents synced") {
            try !harness.published("edge-a").isEmpty && !harness.published("edge-b").isEmpty
        }
        #expect(try harness.published("edge-a").map(\.source) == ["team-a"])
        #expect(try harness.published("edge-b").map(\.source) == ["team-b"])

        try harness.waitUntil("the intruder is refused") { harness.agentLog("intruder").contains("refused the token") }
        #expect(try harness.published("intruder").isEmpty)
        let partial = dir.appending("agent-intruder/partial").path
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: partial)) ?? []).isEmpty, "not one artifact byte")
        #expect((try MetricsAndLogsTests.scrape("http://127.0.0.1:\(harness.httpPort)/metrics")["relay_auth_failures_total{surface=\"tunnel\"}"] ?? 0) >= 1)
        #expect(!harness.relayLog.contains("agent=intruder"), "the relay never treated it as an agent")

        // Asking for another source's digest directly is refused too (see InteropTests for a
        // client that is not relay-agent).
        let digestB = try #require(try harness.published("edge-b").first?.digest)
        let probe = TunnelProbe(harness: harness)
        let result = try probe.fetch(digest: digestB, token: "token-a")
        #expect(result.code == "notFound", "\(result)")
        #expect(result.bytes == 0)
        let unauthenticated = try probe.fetch(digest: digestB, token: "wrong")
        #expect(unauthenticated.code == "unauthenticated" && unauthenticated.bytes == 0)
    }

    @Test func relayRestartAgentReconnectsAndDownloadsNothingTwice() throws {
        let dir = try TemporaryDirectory(prefix: "tunnel")
        defer { dir.remove() }
        let repo = try Self.makeRepo(dir, "app", files: ["app.yaml": "v: 1\n"])
        let harness = try RelayHarness(sources: [.init(name: "app", repo: repo, branch: "main")],
                                       agents: [.init(name: "edge", token: "tok", sources: ["app"])], dir: dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact") { try !harness.published("edge").isEmpty }
        #expect(harness.relayLog.components(separatedBy: "fetch served").count - 1 == 1)

        harness.stopRelay()  // SIGTERM: drains the agent
        try harness.waitUntil("agent told to come back later") { harness.agentLog("edge").contains("relay is draining") }
        try harness.startRelay()
        try harness.waitUntil("agent reconnected") {
            harness.currentRelayLog.contains("agent connected") && harness.currentRelayLog.contains("held=1")
        }
        Thread.sleep(forTimeInterval: 1)
        #expect(!harness.currentRelayLog.contains("fetch served"), "nothing downloaded twice")
        #expect(harness.agentLog("edge").components(separatedBy: "published").count - 1 == 1)
        #expect(try harness.published("edge").count == 1)
    }
}

@Suite struct MutualTLSTests {
    @Test func relayRequiringClientCertificatesAcceptsOnlyAgentsThatPresentOne() throws {
        let dir = try TemporaryDirectory(prefix: "mtls")
        defer { dir.remove() }
        let repo = try TunnelTests.makeRepo(dir, "app", files: ["app.yaml": "v: 1\n"])
        let harness = try RelayHarness(sources: [.init(name: "app", repo: repo, branch: "main")], agents: [
            .init(name: "with-cert", token: "tok-1", sources: ["app"]),
            .init(name: "no-cert", token: "tok-2", sources: ["app"]),
        ], dir: dir)
        defer { harness.shutdown() }
        harness.requireClientCertificates = true
        let (cert, key) = try harness.certificates.issueClientCertificate(commonName: "with-cert")
        harness.clientCertificates["with-cert"] = (cert, key)
        try harness.startRelay()
        try harness.startAgent("with-cert")
        try harness.startAgent("no-cert")
        try harness.waitUntil("the agent with a certificate synced") { try !harness.published("with-cert").isEmpty }
        try harness.waitUntil("the agent without one failed the handshake") {
            harness.agentLog("no-cert").contains("tunnel down")
        }
        #expect(try harness.published("no-cert").isEmpty)
        #expect(!harness.relayLog.contains("agent=no-cert"))
    }
}
