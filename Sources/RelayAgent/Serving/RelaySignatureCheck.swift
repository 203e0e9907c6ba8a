import ArtifactMirror
import Foundation
import Metrics
import Provenance
import Wire

/// The agent's one rule for the relay's signatures, online (DesiredState) and offline
/// (bundles): the signature must be over the OCI manifest this agent will serve for the
/// artifact, computed here from the record it will store, never over a digest the relay
/// merely claims. With `trust.relayPublicKeys` (`keys`) nothing is published unless the
/// signature verifies under one of the keys; without it a signature is only kept and served.
public struct RelaySignatureCheck: Sendable {
    /// nil: no `trust` (the weaker mode: signatures are stored, not required).
    public let keys: TrustedKeys?
    public let signatures: SignatureStore

    public init(keys: TrustedKeys?, signatures: SignatureStore) {
        self.keys = keys
        self.signatures = signatures
    }

    /// The check agent.yaml asks for, with the signatures under `<dataDir>/signatures`.
    public init(config: ResolvedAgentConfig) throws {
        self.init(keys: config.trustedRelayKeys,
                  signatures: try SignatureStore(directory: config.dataDirectory.appendingPathComponent("signatures")))
    }

    /// Checks without storing anything (safe before a download: nothing is spent on an
    /// artifact that would be refused). Returns the manifest served for `record`.
    /// - Parameters:
    ///   - claimedManifestDigest: the manifest digest the relay says it signed ("" if none).
    ///   - keyID: the key the relay says signed it (for the refusal message only).
    public func check(_ record: ArtifactRecord, claimedManifestDigest: String,
                      signature: CosignSignature?, keyID: String? = nil) throws(SignatureFailure) -> OCIManifest {
        let manifest = OCIManifest(record: record)
        guard let keys else { return manifest }
        guard let signature else { throw .missing }
        if !claimedManifestDigest.isEmpty, claimedManifestDigest != manifest.digest {
            throw .wrongManifest(expected: manifest.digest, signed: claimedManifestDigest)
        }
        // The payload names the source: the manifest alone does not (the repository, and so
        // what Flux pulls, is chosen by the source).
        _ = try signature.verify(manifestDigest: manifest.digest, reference: record.source, keys: keys, signedBy: keyID)
        return manifest
    }

    /// Whether the signature on file for `record`'s manifest verifies under the trusted keys
    /// (always true without `trust`): what the catalog serves with `trust` set.
    public func holdsValidSignature(for record: ArtifactRecord) -> Bool {
        verifies(signatures.signature(forManifest: OCIManifest(record: record).digest), for: record)
    }

    /// Whether `signature` (already read) is a valid one for `record` (always true without `trust`).
    public func verifies(_ signature: CosignSignature?, for record: ArtifactRecord) -> Bool {
        guard let keys else { return true }
        guard let signature else { return false }
        return (try? signature.verify(manifestDigest: OCIManifest(record: record).digest, reference: record.source, keys: keys)) != nil
    }

    /// `check`, then stores the signature (before the caller publishes `record`), so the
    /// catalog that serves the artifact also serves its `.sig` tag. Without trust, a
    /// signature naming another manifest is not kept (it could only fail Flux's check).
    /// Throws `SignatureFailure`, or the store's error when the signature cannot be written.
    @discardableResult
    public func admit(_ record: ArtifactRecord, claimedManifestDigest: String, signature: CosignSignature?,
                      keyID: String? = nil) throws -> OCIManifest {
        let manifest = try check(record, claimedManifestDigest: claimedManifestDigest, signature: signature, keyID: keyID)
        if let signature, keys != nil || (try? CosignSignature.signedDigest(in: signature.payload)) == manifest.digest {
            try signatures.save(signature, forManifest: manifest.digest)
        }
        return manifest
    }

    /// Whether a signature for `record`'s manifest is on file.
    public func hasSignature(for record: ArtifactRecord) -> Bool {
        signatures.signature(forManifest: OCIManifest(record: record).digest) != nil
    }

    /// Counts a refusal in `relay_agent_signature_refusals_total{reason=<code>}`.
    public static func countRefusal(_ failure: SignatureFailure) {
        Counter(label: "relay_agent_signature_refusals_total", dimensions: [("reason", failure.code)]).increment()
    }
}

extension Relay_V1_Artifact {
    /// The relay's signature as DesiredState carries it; nil from a relay older than signing.
    var cosignSignature: CosignSignature? {
        guard !signaturePayload.isEmpty || !signature.isEmpty else { return nil }
        return CosignSignature(payload: signaturePayload, signature: signature)
    }
}
