import ArtifactMirror
import Foundation
@testable import RelayAgent
import RelayShared
import Testing

/// The pieces behind the Flux endpoint that need no server: manifest bytes, names and tags,
/// path parsing, pull tokens, and the `flux:` configuration.
@Suite struct FluxCatalogTests {
    static func record(source: String = "podinfo", revision: String, commit: String, digest: String, size: UInt64 = 100,
                       packagedAt: Date? = Date(timeIntervalSince1970: 1_763_700_000)) -> ArtifactRecord {
        ArtifactRecord(source: source, revision: revision, commit: commit, digest: digest, size: size, files: 1, skipped: [],
                       ignoreKey: "relay", createdAt: Date(), lastUsedAt: Date(), origin: "ssh://git@gitlab.example/team/podinfo.git",
                       packagedAt: packagedAt)
    }

    static let commitA = "0123456789abcdef0123456789abcdef01234567"
    static let commitB = "fedcba9876543210fedcba9876543210fedcba98"
    static let digestA = "sha256:" + String(repeating: "a", count: 64)
    static let digestB = "sha256:" + String(repeating: "b", count: 64)

    @Test func manifestBytesDependOnlyOnTheArtifactRecord() throws {
        let first = OCIManifest(record: Self.record(revision: "main@sha1:\(Self.commitA)", commit: Self.commitA, digest: Self.digestA))
        // Recorded at another time by another agent: same artifact, same bytes, same digest.
        var again = Self.record(revision: "main@sha1:\(Self.commitA)", commit: Self.commitA, digest: Self.digestA)
        again.createdAt = Date(timeIntervalSince1970: 5)
        again.lastUsedAt = Date(timeIntervalSince1970: 9)
        #expect(OCIManifest(record: again) == first)
        #expect(first.digest == OCIManifest.digest(of: first.bytes))
        #expect(String(decoding: first.bytes, as: UTF8.self) == """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.cncf.flux.config.v1+json","digest":"\(OCIManifest.configDigest)","size":2},\
            "layers":[{"mediaType":"application/vnd.cncf.flux.content.v1.tar+gzip","digest":"\(Self.digestA)","size":100}],\
            "annotations":{"org.opencontainers.image.created":"2025-11-21T04:40:00Z",\
            "org.opencontainers.image.revision":"main@sha1:\(Self.commitA)",\
            "org.opencontainers.image.source":"ssh://git@gitlab.example/team/podinfo.git"}}
            """)
        // A different revision of the same bytes is a different manifest.
        #expect(OCIManifest(record: Self.record(revision: "v1.0.0@sha1:\(Self.commitA)", commit: Self.commitA, digest: Self.digestA)).digest != first.digest)
        #expect(OCIManifest.configDigest == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
    }

    @Test func catalogTagsBranchLatestAndShortCommitNewestFirst() throws {
        let newer = Self.record(revision: "main@sha1:\(Self.commitB)", commit: Self.commitB, digest: Self.digestB)
        let older = Self.record(revision: "main@sha1:\(Self.commitA)", commit: Self.commitA, digest: Self.digestA)
        let catalog = FluxCatalog(records: [newer, older], repositoryPrefix: nil)
        let repository = try #require(catalog.repositories["podinfo"])
        let newest = OCIManifest(record: newer).digest
        #expect(repository.tags["latest"] == newest)
        #expect(repository.tags["main"] == newest)
        #expect(repository.tags["fedcba9"] == newest)
        #expect(repository.tags["0123456"] == OCIManifest(record: older).digest)
        #expect(repository.manifests.count == 2)
        #expect(catalog.artifacts == [Self.digestA: 100, Self.digestB: 100])
        #expect(FluxCatalog(records: [newer], repositoryPrefix: "clusters/edge").repositories["clusters/edge/podinfo"] != nil)
    }

    @Test(arguments: [
        ("main@sha1:\(commitA)", ["main", "0123456"]),
        ("feature/x@sha1:\(commitA)", ["feature-x", "0123456"]),
        ("v1.2.3@sha1:\(commitA)", ["v1.2.3", "0123456"]),
        ("refs/pull/420/head@sha1:\(commitA)", ["refs-pull-420-head", "0123456"]),
        ("sha1:\(commitA)", ["0123456"]),
        (".hidden@sha1:\(commitA)", ["hidden", "0123456"]),
    ])
    func tagsForRevisions(revision: String, tags: [String]) {
        #expect(OCINames.tags(forRevision: revision, commit: Self.commitA) == tags)
    }

    @Test func namesFollowTheDistributionGrammar() {
        for valid in ["podinfo", "a/b", "team-a/app_1", "a__b", "a--b", "a.b"] { #expect(OCINames.isRepository(valid), "\(valid)") }
        for invalid in ["", "Podinfo", "a/", "/a", "a//b", "..", "a/../b", "-a", "a-", "a___b", "a..b", "%2e", String(repeating: "a", count: 256)] {
            #expect(!OCINames.isRepository(invalid), "\(invalid)")
        }
        #expect(OCINames.repository(forSource: "podinfo", prefix: nil) == "podinfo")
        #expect(OCINames.repository(forSource: "team..app--", prefix: nil) == "team.app")
        #expect(OCINames.repository(forSource: "-._", prefix: nil) == nil)
        #expect(OCINames.isTag("v1.2.3") && OCINames.isTag("_x") && !OCINames.isTag("-x") && !OCINames.isTag(String(repeating: "a", count: 129)))
        #expect(OCINames.isSHA256Digest(Self.digestA) && !OCINames.isSHA256Digest("sha256:" + String(repeating: "A", count: 64)))
    }

    @Test func routesAreParsedFromTheRawPath() {
        #expect(OCIRoute.parse("/v2/") == .base)
        #expect(OCIRoute.parse("/v2/a/b/manifests/latest") == .manifest(name: "a/b", reference: "latest"))
        #expect(OCIRoute.parse("/v2/manifests/manifests/x") == .manifest(name: "manifests", reference: "x"))
        #expect(OCIRoute.parse("/v2/a/blobs/sha256:x") == .blob(name: "a", digest: "sha256:x"))
        #expect(OCIRoute.parse("/v2/a/tags/list") == .tags(name: "a"))
        #expect(OCIRoute.parse("/v2/a/other") == .notFound)
    }

    @Test func bearerTokensExpireAndCannotBeForged() throws {
        let auth = PullAuth(mode: .bearer, username: "flux", password: "pw", tokenLifetime: 60)
        var request = HTTPRequestFixture.get(authorization: "Basic " + Data("flux:pw".utf8).base64EncodedString())
        let (token, _) = try #require(auth.issueToken(for: request))
        #expect(auth.checkToken(token))
        #expect(!auth.checkToken(token, now: Date().addingTimeInterval(61)))
        #expect(!auth.checkToken("9999999999." + String(token.split(separator: ".")[1])))
        #expect(!PullAuth(mode: .bearer, username: "flux", password: "pw").checkToken(token))
        request = HTTPRequestFixture.get(authorization: "Basic " + Data("flux:nope".utf8).base64EncodedString())
        #expect(auth.issueToken(for: request) == nil)
    }

    @Test func fluxConfigurationErrorsNameTheField() throws {
        let dir = try TemporaryDirectory(prefix: "flux-config")
        defer { dir.remove() }
        try Data("t\n".utf8).write(to: dir.appending("token"))
        _ = try DevCertificates.ensure(in: dir.appending("tls"))  // caFile must hold a real certificate
        func load(_ extra: String) throws -> ResolvedAgentConfig {
            let file = dir.appending("agent.yaml")
            try Data("relay: 127.0.0.1:8443\ncaFile: tls/ca.pem\ntokenFile: token\ndataDir: data\n\(extra)".utf8).write(to: file)
            return try AgentConfig.load(path: file.path)
        }
        let plain = try load("listen: 0.0.0.0:9090\n")
        #expect(plain.flux?.url == "http://127.0.0.1:9090")
        #expect(plain.flux?.ociEnabled == true)
        #expect(plain.flux?.needsKubernetes == false)
        let full = try load("""
            listen: 0.0.0.0:9090
            flux:
              url: http://relay-agent.relay-system.svc.cluster.local.:9090
              externalArtifacts: {enabled: true}
              reconcile: {ociRepositories: true, hostAliases: [relay-agent.relay-system:9090]}
            """)
        #expect(full.flux?.externalArtifacts?.namespace == "flux-system")
        #expect(full.flux?.hosts == ["relay-agent.relay-system.svc.cluster.local.:9090", "relay-agent.relay-system:9090"])
        for (yaml, field) in [
            ("flux: {url: http://x}\n", "listen"),
            ("listen: 127.0.0.1:9090\nflux: {url: 'ftp://x'}\n", "flux.url"),
            ("listen: 127.0.0.1:9090\nflux: {externalArtifacts: {namespace: Flux_System}}\n", "flux.externalArtifacts.namespace"),
            ("listen: 127.0.0.1:9090\nflux: {externalArtifacts: {names: {podinfo: 'Bad Name'}}}\n", "flux.externalArtifacts.names.podinfo"),
            ("listen: 127.0.0.1:9090\nflux: {oci: {repositoryPrefix: 'Up/Case'}}\n", "flux.oci.repositoryPrefix"),
            ("listen: 127.0.0.1:9090\nflux: {oci: {auth: {type: basic, username: flux, passwordFile: missing}}}\n", "flux.oci.auth.passwordFile"),
            ("listen: 127.0.0.1:9090\nflux: {reconcile: {receivers: [{url: 'not a url'}]}}\n", "flux.reconcile.receivers[0].url"),
            ("listen: 127.0.0.1:9090\nflux: {kubernetes: {kubeconfig: missing}}\n", "flux.kubernetes.kubeconfig"),
            ("keep: 1\n", "keep"),
        ] {
            #expect(throws: ConfigError.self) { try load(yaml) }
            do { _ = try load(yaml) } catch { #expect((error as? ConfigError)?.field == field, "\(yaml): \(error)") }
        }
    }
}

/// Retention with a grace period: Flux may still be reading the artifact that was just replaced.
@Suite struct StoreGraceTests {
    static func store(_ name: String, grace: TimeInterval, in dir: TemporaryDirectory) throws -> ArtifactStore {
        let store = try ArtifactStore(root: dir.appending(name), retention: 1, replacedGrace: grace)
        for digest in [FluxCatalogTests.digestA, FluxCatalogTests.digestB] {
            try Data(count: 100).write(to: store.path(forDigest: digest))
        }
        return store
    }

    @Test func aReplacedArtifactStaysForTheGracePeriodOnly() throws {
        let dir = try TemporaryDirectory(prefix: "store-grace")
        defer { dir.remove() }
        let old = FluxCatalogTests.record(revision: "main@sha1:\(FluxCatalogTests.commitA)", commit: FluxCatalogTests.commitA, digest: FluxCatalogTests.digestA)
        var new = FluxCatalogTests.record(revision: "main@sha1:\(FluxCatalogTests.commitB)", commit: FluxCatalogTests.commitB, digest: FluxCatalogTests.digestB)

        let graceful = try Self.store("graceful", grace: 60, in: dir)
        _ = try graceful.recordExisting(old)
        _ = try graceful.recordExisting(new)
        #expect(try graceful.allRecords().map(\.digest) == [FluxCatalogTests.digestB, FluxCatalogTests.digestA])
        #expect(FileManager.default.fileExists(atPath: graceful.path(forDigest: FluxCatalogTests.digestA).path))

        // Once the replacement is older than the grace period, the next publication evicts it.
        let strict = try Self.store("expired", grace: 60, in: dir)
        _ = try strict.recordExisting(old)
        new.createdAt = Date().addingTimeInterval(-120)
        _ = try strict.recordExisting(new)
        #expect(try strict.allRecords().map(\.digest) == [FluxCatalogTests.digestB])
        #expect(!FileManager.default.fileExists(atPath: strict.path(forDigest: FluxCatalogTests.digestA).path))
    }
}
