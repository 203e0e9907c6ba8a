import ArtifactMirror
import Foundation
import Logging
import Testing
@testable import RelayServer

/// Bad upstreams: each is a clear error with its stable code, and nothing is stored or
/// offered. Real servers (lighttpd as a Helm repository, docker-registry) where the fault can
/// be made real; a registry that returns a manifest over the limit is lighttpd serving static
/// files at registry paths (docker-registry itself refuses to store one that large).
@Suite struct UpstreamFailureTests {
    static let fixture = FluxOCITests.fixture("helm/helm_fixture.py")

    struct Mirror {
        let dir: TemporaryDirectory
        let store: ArtifactStore

        init(_ prefix: String) throws {
            dir = try TemporaryDirectory(prefix: prefix)
            store = try ArtifactStore(root: dir.appending("store"))
        }

        /// Mirrors `upstream` expecting `code`; returns the error's message.
        func expectFailure(_ code: UpstreamError.Code, _ upstream: Upstream, sourceLocation: SourceLocation = #_sourceLocation) async -> String {
            let packager = UpstreamPackager(store: store, maxArtifactBytes: 64 << 20, logger: Logger(label: "test"))
            do {
                let artifact = try await packager.package(source: "bad", upstream: upstream, current: nil)
                Issue.record("mirrored \(artifact.digest) instead of failing with \(code.rawValue)", sourceLocation: sourceLocation)
                return ""
            } catch {
                #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
                // Nothing stored, no temporary file left.
                #expect((try? store.allRecords())?.isEmpty == true, sourceLocation: sourceLocation)
                let stored = (try? FileManager.default.contentsOfDirectory(atPath: store.root.appendingPathComponent("artifacts/sha256").path)) ?? []
                let temporary = (try? FileManager.default.contentsOfDirectory(atPath: store.root.appendingPathComponent("tmp").path)) ?? []
                #expect(stored.isEmpty && temporary.isEmpty, "\(stored) \(temporary)", sourceLocation: sourceLocation)
                return error.message
            }
        }
    }

    static func access(_ username: String? = nil, _ password: String? = nil, insecure: Bool = false) -> UpstreamAccess {
        UpstreamAccess(username: username, password: password, caFile: nil, insecure: insecure)
    }

    static func chartRepository(_ dir: TemporaryDirectory, _ charts: [(String, [String])], wrongDigest: String? = nil) throws -> URL {
        let root = try dir.subdirectory("charts")
        for (version, flags) in charts {
            _ = try runProcess("/usr/bin/env", ["python3", fixture, "chart", root.appendingPathComponent("podinfo-\(version).tgz").path, "podinfo", version] + flags)
        }
        _ = try runProcess("/usr/bin/env", ["python3", fixture, "index", root.path] + (wrongDigest.map { ["--wrong-digest", $0] } ?? []))
        return root
    }

    @Test func helmRepositoryFaults() async throws {
        let mirror = try Mirror("upstream-helm")
        defer { mirror.dir.remove() }
        let root = try Self.chartRepository(mirror.dir, [("6.0.0", []), ("6.1.0", []), ("6.2.0", ["--symlink"]), ("6.3.0", ["--traversal"])],
                                            wrongDigest: "6.1.0")
        let server = try HelmRepoServer(root: root, username: "alice", password: "pw")
        defer { server.stop() }
        func upstream(_ version: String, _ access: UpstreamAccess = Self.access("alice", "pw")) -> Upstream {
            .helmRepository(HelmRepositoryUpstream(url: server.url, chart: "podinfo", version: .exact(version), access: access))
        }
        // The index's digest does not match the download.
        let mismatch = await mirror.expectFailure(.digestMismatch, upstream("6.1.0"))
        #expect(mismatch.contains("the index gives digest"))
        // A chart with a symlink, and one with a path leaving the chart directory.
        #expect(await mirror.expectFailure(.refusedContent, upstream("6.2.0")).contains("link"))
        #expect(await mirror.expectFailure(.refusedContent, upstream("6.3.0")).contains(".."))
        // Wrong and missing credentials; no such version; no such chart.
        #expect(await mirror.expectFailure(.unauthorized, upstream("6.0.0", Self.access("alice", "wrong"))).contains("check auth"))
        #expect(await mirror.expectFailure(.unauthorized, upstream("6.0.0", Self.access())).contains("set auth"))
        #expect(await mirror.expectFailure(.notFound, upstream("9.9.9")).contains("no version 9.9.9"))
        // The good one, for contrast, with a range that skips the bad versions' neighbours.
        let good = try await UpstreamPackager(store: mirror.store, maxArtifactBytes: 64 << 20, logger: Logger(label: "test"))
            .package(source: "ok", upstream: upstream("6.0.0"), current: nil)
        #expect(good.revision.hasPrefix("6.0.0@sha256:"))
        #expect(good.oci?.kind == .helm)
    }

    @Test func registryFaults() async throws {
        let mirror = try Mirror("upstream-registry")
        defer { mirror.dir.remove() }
        let registry = try OCIRegistryServer(username: "bob", password: "pw")
        defer { registry.stop() }
        let content = try mirror.dir.subdirectory("content")
        try Data("kind: ConfigMap\n".utf8).write(to: content.appendingPathComponent("cm.yaml"))
        let tarball = mirror.dir.appending("app.tar.gz")
        _ = try runProcess("/usr/bin/env", ["tar", "-C", content.path, "-czf", tarball.path, "cm.yaml"])
        let layout = mirror.dir.appending("layout")
        _ = try runProcess("/usr/bin/env", ["python3", Self.fixture, "layout", layout.path, "v1", "--flux", tarball.path, "--revision", "main@sha1:abc"])
        try registry.push(layout: layout, tag: "v1", to: "app")
        func upstream(_ access: UpstreamAccess, repository: String = "app", host: String? = nil) -> Upstream {
            .oci(RegistryUpstream(host: host ?? registry.host, repository: repository, access: access), reference: .tag("v1"))
        }
        // A registry that answers 401 whatever is sent: an error after one authentication, no loop.
        #expect(await mirror.expectFailure(.unauthorized, upstream(Self.access("bob", "wrong", insecure: true))).contains("check auth"))
        #expect(await mirror.expectFailure(.unauthorized, upstream(Self.access(insecure: true))).contains("set auth"))
        #expect(await mirror.expectFailure(.notFound, upstream(Self.access("bob", "pw", insecure: true), repository: "nope")).contains("404"))

        // A layer whose bytes no longer match its digest (the registry's storage tampered with).
        let digest = try HelmOCISourceTests.digest(tarball)
        let stored = registry.blobFile(digest)
        var bytes = try Data(contentsOf: stored)
        bytes[bytes.count / 2] ^= 0xff
        try bytes.write(to: stored)
        #expect(await mirror.expectFailure(.digestMismatch, upstream(Self.access("bob", "pw", insecure: true))).contains("arrived as"))

        // A manifest over the 4 MiB limit (static files at the registry's paths).
        let fake = try mirror.dir.subdirectory("fake-registry")
        let manifests = fake.appendingPathComponent("v2/big/manifests")
        try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: fake.appendingPathComponent("v2/index.html"))
        try Data(repeating: 0x20, count: 5 << 20).write(to: manifests.appendingPathComponent("v1"))
        let server = try HelmRepoServer(root: fake)
        defer { server.stop() }
        let big = await mirror.expectFailure(.tooLarge, upstream(Self.access(insecure: true), repository: "big", host: "127.0.0.1:\(server.port)"))
        #expect(big.contains("4194304"))
    }

    /// The distribution token flow against docker-registry in `auth: token` mode: the 401's
    /// Bearer challenge is answered at the realm with the credentials, the token used; wrong
    /// credentials end at the token service with one refusal, no loop.
    @Test func registryTokenAuthentication() async throws {
        let mirror = try Mirror("upstream-token")
        defer { mirror.dir.remove() }
        let tokens = try RegistryTokenServer(username: "carol", password: "token-pw")
        defer { tokens.stop() }
        let registry = try OCIRegistryServer(username: "carol", password: "token-pw", token: tokens)
        defer { registry.stop() }
        let content = try mirror.dir.subdirectory("content")
        try Data("kind: ConfigMap\n".utf8).write(to: content.appendingPathComponent("cm.yaml"))
        let tarball = mirror.dir.appending("app.tar.gz")
        _ = try runProcess("/usr/bin/env", ["tar", "-C", content.path, "-czf", tarball.path, "cm.yaml"])
        let layout = mirror.dir.appending("layout")
        _ = try runProcess("/usr/bin/env", ["python3", Self.fixture, "layout", layout.path, "v1", "--flux", tarball.path, "--revision", "main@sha1:abc"])
        try registry.push(layout: layout, tag: "v1", to: "group/app")
        func upstream(_ access: UpstreamAccess) -> Upstream {
            .oci(RegistryUpstream(host: registry.host, repository: "group/app", access: access), reference: .tag("v1"))
        }
        let before = try tokens.stats()
        let refused = await mirror.expectFailure(.unauthorized, upstream(Self.access("carol", "wrong", insecure: true)))
        #expect(refused.contains("token service"))
        #expect(try tokens.stats().refused == before.refused + 1)
        let artifact = try await UpstreamPackager(store: mirror.store, maxArtifactBytes: 64 << 20, logger: Logger(label: "test"))
            .package(source: "app", upstream: upstream(Self.access("carol", "token-pw", insecure: true)), current: nil)
        #expect(artifact.digest == (try HelmOCISourceTests.digest(tarball)))
        #expect(artifact.oci?.kind == .oci)
        #expect(try tokens.stats().issued > before.issued)
    }

    /// End to end: a relay whose only source fails never offers anything; the failure is
    /// counted by code in the relay's metrics.
    @Test func aFailingSourceIsCountedAndDeliversNothing() throws {
        let dir = try TemporaryDirectory(prefix: "upstream-e2e")
        defer { dir.remove() }
        let root = try Self.chartRepository(dir, [("6.1.0", [])], wrongDigest: "6.1.0")
        let server = try HelmRepoServer(root: root)
        defer { server.stop() }
        let harness = try RelayHarness(sources: [], agents: [.init(name: "edge", token: "t-edge", sources: ["bad"])], dir: dir)
        harness.relayExtraYAML = "  - {name: bad, helm: {url: \(server.url), chart: podinfo, version: 6.1.0}, interval: 1s}\n"
        try harness.startRelay()
        defer { harness.shutdown() }
        try harness.startAgent("edge")
        try harness.waitUntil("the failure counted twice (1 s interval)", timeout: 30) {
            let text = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/metrics").text
            return text.split(separator: "\n").contains {
                $0.hasPrefix("relay_upstream_failures_total{") && $0.contains(#"code="upstream_digest_mismatch""#) && $0.contains(#"source="bad""#)
                    && (Double($0.split(separator: " ").last ?? "") ?? 0) >= 2
            }
        }
        #expect(try harness.published("edge").isEmpty)
        #expect(try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/readyz").status == 503)
    }
}
