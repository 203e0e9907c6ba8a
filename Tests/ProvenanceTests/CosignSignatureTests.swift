import Crypto
import Foundation
import Provenance
import Testing

@Suite struct CosignSignatureTests {
    /// The payload cosign wrote in a public `cosign sign` trace (252 bytes, sha256 b671489e…):
    /// ours must be byte-identical for the same reference and digest.
    @Test func payloadMatchesCosignByteForByte() {
        let payload = CosignSignature.payload(
            manifestDigest: "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d",
            dockerReference: "index.docker.io/chihjenhuang/cosign1")
        #expect(payload.count == 252)
        #expect(OCIManifest.digest(of: payload) == "sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc")
    }

    /// The signature manifest has cosign's shape: OCI manifest, OCI config holding the payload
    /// as its diff id, one simple-signing layer carrying the base64 signature annotation.
    @Test func signatureManifestHasCosignsLayout() throws {
        let key = SigningKey(P256.Signing.PrivateKey())
        let manifest = "sha256:" + String(repeating: "ab", count: 32)
        let signature = CosignSignature.sign(manifestDigest: manifest, dockerReference: "relay/podinfo", key: key)
        let object = try #require(try JSONSerialization.jsonObject(with: signature.manifestBytes) as? [String: Any])
        #expect(object["mediaType"] as? String == "application/vnd.oci.image.manifest.v1+json")
        let config = try #require(object["config"] as? [String: Any])
        #expect(config["mediaType"] as? String == "application/vnd.oci.image.config.v1+json")
        #expect(config["digest"] as? String == OCIManifest.digest(of: signature.configBytes))
        let layers = try #require(object["layers"] as? [[String: Any]])
        #expect(layers.count == 1)
        #expect(layers[0]["mediaType"] as? String == "application/vnd.dev.cosign.simplesigning.v1+json")
        #expect(layers[0]["digest"] as? String == signature.payloadDigest)
        #expect((layers[0]["annotations"] as? [String: String])?["dev.cosignproject.cosign/signature"] == signature.signature)
        let configObject = try #require(try JSONSerialization.jsonObject(with: signature.configBytes) as? [String: Any])
        #expect(((configObject["rootfs"] as? [String: Any])?["diff_ids"] as? [String]) == [signature.payloadDigest])
        #expect(CosignSignature.tag(forManifest: manifest) == "sha256-" + String(repeating: "ab", count: 32) + ".sig")
        // The DER signature verifies over the payload with the public key (what cosign checks).
        let der = try #require(Data(base64Encoded: signature.signature))
        let parsed = try P256.Signing.ECDSASignature(derRepresentation: der)
        #expect(key.privateKey.publicKey.isValidSignature(parsed, for: signature.payload))
    }

    @Test func verificationRefusesEveryAlteration() throws {
        let key = SigningKey(P256.Signing.PrivateKey())
        let other = SigningKey(P256.Signing.PrivateKey())
        let manifest = "sha256:" + String(repeating: "01", count: 32)
        let signature = CosignSignature.sign(manifestDigest: manifest, dockerReference: "x", key: key)
        let trusted = TrustedKeys([other.publicKey, key.publicKey])
        #expect(try signature.verify(manifestDigest: manifest, keys: trusted) == key.publicKey)

        #expect(throws: SignatureFailure.wrongManifest(expected: "sha256:" + String(repeating: "02", count: 32), signed: manifest)) {
            try signature.verify(manifestDigest: "sha256:" + String(repeating: "02", count: 32), keys: trusted)
        }
        #expect(throws: SignatureFailure.untrusted(keyIDs: other.publicKey.id)) {
            try signature.verify(manifestDigest: manifest, keys: TrustedKeys([other.publicKey]))
        }
        // Signed for source "x": offered as another source's, refused.
        #expect(try signature.verify(manifestDigest: manifest, reference: "x", keys: trusted) == key.publicKey)
        #expect(throws: SignatureFailure.wrongSource(expected: "y", signed: "x")) {
            try signature.verify(manifestDigest: manifest, reference: "y", keys: trusted)
        }
        var der = try #require(Data(base64Encoded: signature.signature))
        der[der.count - 3] ^= 0x01
        let flipped = CosignSignature(payload: signature.payload, signature: der.base64EncodedString())
        #expect(throws: SignatureFailure.self) { try flipped.verify(manifestDigest: manifest, keys: trusted) }
        // A payload naming the same digest but changed anywhere else no longer verifies.
        var payload = signature.payload
        payload[payload.startIndex + 40] ^= 0x20
        #expect(throws: SignatureFailure.self) {
            try CosignSignature(payload: payload, signature: signature.signature).verify(manifestDigest: manifest, keys: trusted)
        }
    }
}

@Suite struct SigningKeyTests {
    @Test func createdOnceWithPrivateModeThenLoaded() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("signing/relay.key").path
        let (first, created) = try SigningKey.loadOrCreate(path: path)
        #expect(created)
        let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)
        #expect(mode.intValue & 0o077 == 0)
        let (second, createdAgain) = try SigningKey.loadOrCreate(path: path)
        #expect(!createdAgain)
        #expect(first.publicKey == second.publicKey)
    }

    @Test func trustFilesHoldSeveralPublicKeysAndRefusePrivateOnes() throws {
        let a = SigningKey(P256.Signing.PrivateKey()), b = SigningKey(P256.Signing.PrivateKey())
        let keys = try TrustedKey.parse(pem: a.publicKey.pem + "\n" + b.publicKey.pem, path: "relay.pub")
        #expect(keys == [a.publicKey, b.publicKey])
        #expect(throws: KeyError.self) { try TrustedKey.parse(pem: a.privateKey.pemRepresentation, path: "relay.pub") }
        #expect(throws: KeyError.self) { try TrustedKey.parse(pem: "hello", path: "relay.pub") }
    }

    @Test func statementsEncodeTheSameBytesEveryTime() throws {
        let artifact = BundleArtifact(source: "podinfo", revision: "main@sha1:" + String(repeating: "a", count: 40),
                                      digest: try #require(SHA256Digest("sha256:" + String(repeating: "c", count: 64))), size: 10,
                                      commit: String(repeating: "a", count: 40), origin: "https://git.example/podinfo.git",
                                      createdUnixMs: 1_700_000_000_123, manifestDigest: try #require(SHA256Digest("sha256:" + String(repeating: "d", count: 64))),
                                      signature: CosignSignature(payload: Data("{}".utf8), signature: "AA=="), included: true)
        let statement = BundleStatement(agent: "edge-1", sequence: 3, createdUnixMs: 1, expiresUnixMs: nil,
                                        statusAck: StatusAcknowledgement(journalID: "j", upTo: 9), artifacts: [artifact], files: [],
                                        parts: BundleParts(count: 1, partBytes: 0, totalBytes: 0), since: nil)
        #expect(statement.encoded() == statement.encoded())
        let decoded = try JSONDecoder().decode(BundleStatement.self, from: statement.encoded())
        #expect(decoded == statement)
        // The manifest recomputed from the statement is the one the agent serves.
        #expect(artifact.manifest == OCIManifest(revision: artifact.revision, origin: artifact.origin, digest: artifact.digest.description,
                                                 size: 10, created: Date(timeIntervalSince1970: 1_700_000_000)))
    }
}
