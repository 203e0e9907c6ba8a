import ArtifactMirror
import Crypto
import Foundation
import Provenance
@testable import RelayAgent
import Testing

/// The relay signs every artifact's OCI manifest (cosign format); an agent with
/// `trust.relayPublicKeys` publishes nothing whose signature does not verify, and serves the
/// signature under cosign's `sha256-<hex>.sig` tag. Real relay-server and relay-agent
/// processes; the relay's test-only fault hook alters or drops signatures in DesiredState.
@Suite struct SignatureTrustTests {
    /// A relay and agent `edge` serving Flux (the agent trusting `trustFile`).
    typealias Setup = FluxOCITests.Setup

    /// `relay-server keys public` (text) for the harness's relay.yaml.
    static func relayPublicKeys(_ harness: RelayHarness, json: Bool = false) throws -> String {
        try runProcess(Binaries.relayServer, ["keys", "public", "--config", harness.dir.appending("relay.yaml").path] + (json ? ["--json"] : [])).stdout
    }

    /// A relay (with `relayEnvironment`, e.g. a signature fault) and agent `edge` serving
    /// Flux. The agent trusts the relay's `keys public` output, or `trustedPEM` when given.
    static func start(_ prefix: String, relayEnvironment: [String: String] = [:], trustedPEM: String? = nil) throws -> Setup {
        let (dir, repo, harness) = try RelayHarness.single(prefix)
        do {
            try harness.startRelay(environment: relayEnvironment)
            let trustFile = Setup.trustFile(dir)
            try Data((try trustedPEM ?? relayPublicKeys(harness)).utf8).write(to: trustFile)
            let port = try harness.serveFlux("edge", yaml: "trust: {relayPublicKeys: [\(trustFile.path)]}\n")
            try harness.startAgent("edge")
            try harness.waitUntil("flux endpoint ready") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
            return Setup(dir: dir, repo: repo, harness: harness, port: port)
        } catch {
            harness.shutdown()
            dir.remove()
            throw error
        }
    }

    static func otherKeyPEM() -> String { P256.Signing.PrivateKey().publicKey.pemRepresentation + "\n" }

    /// A refused artifact: counted under `reason`, reported to the relay's timeline, and
    /// nothing published, fetched or served; both processes still answer.
    static func expectRefused(_ setup: Setup, reason: String) throws -> [String: Any] {
        let harness = setup.harness
        try harness.waitUntil("a refusal counted as \(reason)") { try setup.refusals(reason) >= 1 }
        #expect(try harness.published("edge").isEmpty, "a refused artifact was published")
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/tags/list").status == 404)
        let metrics = try MetricsAndLogsTests.scrape("\(setup.base)/metrics")
        #expect((metrics["relay_agent_fetch_bytes_total"] ?? 0) == 0, "bytes were fetched for a refused artifact")
        #expect((metrics["relay_agent_artifacts_published_total"] ?? 0) == 0)
        try harness.waitUntil("the refusal on the relay's timeline") {
            try !ArtifactIntegrityTests.events(harness, reason: "SignatureRefused").isEmpty
        }
        let event = try #require(try ArtifactIntegrityTests.events(harness, reason: "SignatureRefused").first)
        #expect((event["metadata"] as? [String: String])?["code"] == reason)
        #expect(try HTTPProbe.request("\(setup.base)/healthz").status == 200)
        #expect(try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/healthz").status == 200)
        return event
    }

    @Test func aSignedArtifactIsPublishedAndItsSignatureServedUnderTheSigTag() throws {
        let setup = try Self.start("sig-trusted")
        defer { setup.stop() }
        try setup.harness.waitUntil("artifact published") { try !setup.harness.published("edge").isEmpty }
        let head = try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/main", method: "HEAD")
        let manifestDigest = try #require(head.headers["docker-content-digest"])
        let hex = String(manifestDigest.dropFirst(7))
        let tag = "sha256-\(hex).sig"

        let tags = try #require(try HTTPProbe.request("\(setup.base)/v2/podinfo/tags/list").json?["tags"] as? [String])
        #expect(tags.contains(tag))
        let signature = try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/\(tag)", headers: [FluxOCITests.fluxAccept])
        #expect(signature.status == 200)
        #expect(signature.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json")
        #expect(signature.headers["docker-content-digest"] == signature.sha256)
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/\(signature.sha256)").body == signature.body)
        let layer = try #require((signature.json?["layers"] as? [[String: Any]])?.first)
        #expect(layer["mediaType"] as? String == "application/vnd.dev.cosign.simplesigning.v1+json")
        let payloadDigest = try #require(layer["digest"] as? String)
        let payload = try HTTPProbe.request("\(setup.base)/v2/podinfo/blobs/\(payloadDigest)")
        #expect(payload.status == 200 && payload.sha256 == payloadDigest)
        #expect(try CosignSignature.signedDigest(in: payload.body) == manifestDigest)
        let configDigest = try #require((signature.json?["config"] as? [String: Any])?["digest"] as? String)
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/blobs/\(configDigest)").sha256 == configDigest)

        // No referrers API: 404, and 404 for the referrers fallback tag, so cosign and Flux
        // take the `.sig` tag.
        let referrers = try HTTPProbe.request("\(setup.base)/v2/podinfo/referrers/\(manifestDigest)",
                                              headers: ["Accept: application/vnd.oci.image.index.v1+json"])
        #expect(referrers.status == 404 && referrers.ociErrorCode != nil)
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/sha256-\(hex)").status == 404)
        #expect(try HTTPProbe.request("\(setup.base)/v2/nothing/referrers/\(manifestDigest)").ociErrorCode == "NAME_UNKNOWN")
        #expect(try MetricsAndLogsTests.scrape("\(setup.base)/metrics").keys.allSatisfy { !$0.hasPrefix("relay_agent_signature_refusals_total") })
    }

    @Test func aSignatureAlteredInFlightIsRefusedAndTheFixedRelayIsAccepted() throws {
        let setup = try Self.start("sig-altered", relayEnvironment: ["RELAY_TEST_SIGNATURE_FAULT": "alter"])
        defer { setup.stop() }
        _ = try Self.expectRefused(setup, reason: "bad_signature")
        // Not a hot loop: retried with the fetch backoff (100 ms doubling to 1 s here).
        let before = try setup.refusals("bad_signature")
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try setup.refusals("bad_signature") - before <= 10, "a hot loop would refuse hundreds of times")

        // The same agent, once the relay signs correctly again, publishes.
        setup.harness.stopRelay()
        try setup.harness.startRelay()
        try setup.harness.waitUntil("artifact published after the fault") { try !setup.harness.published("edge").isEmpty }
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/main").status == 200)
    }

    @Test func aRelayOlderThanSigningIsRefusedAsUnsigned() throws {
        let setup = try Self.start("sig-unsigned", relayEnvironment: ["RELAY_TEST_SIGNATURE_FAULT": "omit"])
        defer { setup.stop() }
        let event = try Self.expectRefused(setup, reason: "unsigned")
        #expect((event["message"] as? String)?.contains("older than signing") == true)
    }

    @Test func anAgentTrustingAnotherKeyRefuses() throws {
        let setup = try Self.start("sig-otherkey", trustedPEM: Self.otherKeyPEM())
        defer { setup.stop() }
        _ = try Self.expectRefused(setup, reason: "bad_signature")
    }

    @Test func rotationKeepsTheRetiredKeyListedUntilRemovedAndAgentsAcceptAnyTrustedKey() throws {
        let setup = try Self.start("sig-rotate")
        defer { setup.stop() }
        let harness = setup.harness
        try harness.waitUntil("artifact published") { try !harness.published("edge").isEmpty }
        let config = harness.dir.appending("relay.yaml").path
        let first = try #require(try JSONSerialization.jsonObject(with: Data(Self.relayPublicKeys(harness, json: true).utf8)) as? [[String: String]])
        #expect(first.map { $0["status"] } == ["current"])
        let oldID = try #require(first.first?["id"])

        harness.stopRelay()
        let rotated = try runProcess(Binaries.relayServer, ["keys", "rotate", "--config", config])
        #expect(rotated.stdout.contains("next start"))
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(Self.relayPublicKeys(harness, json: true).utf8)) as? [[String: String]])
        #expect(listed.map { $0["status"] } == ["current", "retired"])
        #expect(listed.last?["id"] == oldID && listed.first?["id"] != oldID)
        #expect(try TrustedKey.parse(pem: Self.relayPublicKeys(harness), path: "keys public").map(\.id) == listed.map { $0["id"]! })

        // The restarted relay signs with the new key: an agent trusting only the old one refuses the next revision.
        try harness.startRelay()
        try setup.repo.write("b.yaml", "b: 2\n")
        _ = try setup.repo.commit("second")
        try harness.pushWebhook(source: harness.sources[0])
        try harness.waitUntil("the new key's signature refused") { try setup.refusals("bad_signature") >= 1 }
        #expect(try harness.published("edge").count == 1)
        // Trusting what `keys public` lists now (new and retired keys): accepted.
        try Data(Self.relayPublicKeys(harness).utf8).write(to: setup.trustFile)
        harness.stopAgent("edge")
        try harness.startAgent("edge")
        try harness.waitUntil("second revision published") { try harness.published("edge").count == 2 }

        // Removing: the current key cannot be, the retired one goes from the listing.
        let current = try #require(listed.first?["id"])
        #expect(try runProcess(Binaries.relayServer, ["keys", "remove", current, "--config", config], allowFailure: true).status == 2)
        _ = try runProcess(Binaries.relayServer, ["keys", "remove", oldID, "--config", config])
        let after = try #require(try JSONSerialization.jsonObject(with: Data(Self.relayPublicKeys(harness, json: true).utf8)) as? [[String: String]])
        #expect(after.map { $0["id"] } == [current])
    }

    /// Signatures of manifests no longer served are pruned, but not one written moments ago
    /// (its artifact is being published).
    @Test func pruningKeepsServedAndFreshSignatures() throws {
        let dir = try TemporaryDirectory(prefix: "sig-prune")
        defer { dir.remove() }
        let store = try SignatureStore(directory: dir.appending("signatures"))
        let key = SigningKey(P256.Signing.PrivateKey())
        let served = "sha256:" + String(repeating: "a", count: 64), gone = "sha256:" + String(repeating: "b", count: 64)
        for digest in [served, gone] {
            try store.save(CosignSignature.sign(manifestDigest: digest, dockerReference: "podinfo", key: key), forManifest: digest)
        }
        store.prune(keeping: [served])
        #expect(store.signature(forManifest: gone) != nil, "a fresh signature was pruned")
        store.prune(keeping: [served], grace: 0)
        #expect(store.signature(forManifest: gone) == nil)
        #expect(try store.signature(forManifest: served)?.verify(manifestDigest: served, keys: TrustedKeys([key.publicKey])) == key.publicKey)
    }

    /// The catalog serves a stored signature beside its manifest: the `.sig` tag, the
    /// signature manifest by digest, its payload and config blobs; nothing without one.
    @Test func theCatalogServesStoredSignaturesUnderCosignsTag() throws {
        let record = FluxCatalogTests.record(revision: "main@sha1:" + String(repeating: "1", count: 40),
                                             commit: String(repeating: "1", count: 40), digest: "sha256:" + String(repeating: "c", count: 64))
        let manifest = OCIManifest(record: record)
        let signature = CosignSignature.sign(manifestDigest: manifest.digest, dockerReference: "podinfo", key: SigningKey(P256.Signing.PrivateKey()))
        let catalog = FluxCatalog(records: [record], repositoryPrefix: nil) { $0 == manifest.digest ? signature : nil }
        let repository = try #require(catalog.repositories["podinfo"])
        #expect(repository.tags[CosignSignature.tag(forManifest: manifest.digest)] == signature.manifestDigest)
        #expect(repository.signatureManifests[signature.manifestDigest] == signature.manifestBytes)
        #expect(repository.signatureBlobs[signature.payloadDigest] == signature.payload)
        #expect(repository.signatureBlobs[signature.configDigest] == signature.configBytes)
        #expect(catalog.manifestDigests == [manifest.digest])
        let unsigned = try #require(FluxCatalog(records: [record], repositoryPrefix: nil).repositories["podinfo"])
        #expect(unsigned.tags.keys.allSatisfy { !$0.hasSuffix(".sig") } && unsigned.signatureManifests.isEmpty)
        #expect(OCIRoute.parse("/v2/a/b/referrers/sha256:x") == .referrers(name: "a/b", digest: "sha256:x"))
        #expect(OCIRoute.parse("/v2/x/referrers/manifests/latest") == .manifest(name: "x/referrers", reference: "latest"))
    }
}

extension FluxOCITests.Setup {
    /// The PEM file a trusting agent reads (`trust.relayPublicKeys`).
    static func trustFile(_ dir: TemporaryDirectory) -> URL { dir.appending("trusted-relay.pub") }
    var trustFile: URL { Self.trustFile(dir) }

    /// `relay_agent_signature_refusals_total{reason}` at the agent (0 when never counted).
    func refusals(_ reason: String) throws -> Double {
        try MetricsAndLogsTests.scrape("\(base)/metrics")["relay_agent_signature_refusals_total{reason=\"\(reason)\"}"] ?? 0
    }

    func stop() {
        harness.shutdown()
        dir.remove()
    }
}
