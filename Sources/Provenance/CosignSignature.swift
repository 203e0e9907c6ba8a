import Foundation

/// A signature over one OCI manifest in cosign's v2 format (what `cosign sign --key` stores
/// and what cosign, and Flux's `OCIRepository` `verify.provider: cosign`, check with a
/// public key):
/// - the signed message is a "simple signing" JSON payload naming the manifest's digest
///   (`critical.image.docker-manifest-digest`);
/// - the signature is base64 of the ASN.1 DER ECDSA signature over SHA-256(payload);
/// - in a registry it is the single layer (media type `application/vnd.dev.cosign.simplesigning.v1+json`,
///   annotation `dev.cosignproject.cosign/signature`) of a manifest tagged
///   `sha256-<hex of the signed manifest digest>.sig` in the same repository.
public struct CosignSignature: Sendable, Equatable, Codable {
    public static let payloadMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let signatureAnnotation = "dev.cosignproject.cosign/signature"
    public static let configMediaType = "application/vnd.oci.image.config.v1+json"
    public static let payloadType = "cosign container image signature"

    /// The exact bytes signed (the layer's content).
    public let payload: Data
    /// Base64 of the DER signature (the layer annotation's value).
    public let signature: String

    public init(payload: Data, signature: String) {
        self.payload = payload
        self.signature = signature
    }

    /// Signs `manifestDigest` with `key`. `dockerReference` is the repository as the signer
    /// names it (informational: cosign's verifier checks the manifest digest, not the name).
    public static func sign(manifestDigest: String, dockerReference: String, key: SigningKey) -> CosignSignature {
        let payload = Self.payload(manifestDigest: manifestDigest, dockerReference: dockerReference)
        return CosignSignature(payload: payload, signature: key.sign(payload).base64EncodedString())
    }

    /// The simple-signing payload as cosign writes it (Go struct field order; `optional` null).
    public static func payload(manifestDigest: String, dockerReference: String) -> Data {
        Data(("{\"critical\":{\"identity\":{\"docker-reference\":\(JSONText.quoted(dockerReference))},"
            + "\"image\":{\"docker-manifest-digest\":\(JSONText.quoted(manifestDigest))},"
            + "\"type\":\(JSONText.quoted(payloadType))},\"optional\":null}").utf8)
    }

    /// The manifest digest the payload names, if it is a cosign container image signature.
    public static func signedDigest(in payload: Data) throws(SignatureFailure) -> String {
        struct Payload: Decodable {
            struct Critical: Decodable {
                struct Image: Decodable {
                    var digest: String
                    enum CodingKeys: String, CodingKey { case digest = "docker-manifest-digest" }
                }
                var image: Image
                var type: String
            }
            var critical: Critical
        }
        let decoded: Payload
        do { decoded = try JSONDecoder().decode(Payload.self, from: payload) } catch {
            throw .malformedPayload("not a simple-signing payload: \(error)")
        }
        guard decoded.critical.type == payloadType else {
            throw .malformedPayload("critical.type is '\(decoded.critical.type.prefix(80))', not '\(payloadType)'")
        }
        return decoded.critical.image.digest
    }

    /// Checks that this signs `manifestDigest` and that one of `keys` made it; returns that key.
    public func verify(manifestDigest: String, keys: TrustedKeys) throws(SignatureFailure) -> TrustedKey {
        let named = try Self.signedDigest(in: payload)
        guard named == manifestDigest else { throw .wrongManifest(expected: manifestDigest, signed: named) }
        guard let raw = Data(base64Encoded: signature) else { throw .malformedSignature }
        guard let signer = keys.signer(of: payload, signature: raw) else { throw .untrusted(keyIDs: keys.ids) }
        return signer
    }

    // MARK: The signature as an OCI manifest

    /// `sha256-<hex>.sig`: the tag cosign looks under for the signatures of `manifestDigest`.
    public static func tag(forManifest manifestDigest: String) -> String {
        manifestDigest.replacingOccurrences(of: "sha256:", with: "sha256-") + ".sig"
    }

    public var payloadDigest: String { OCIManifest.digest(of: payload) }

    /// The image config go-containerregistry writes for a one-layer image built from an empty
    /// one (cosign's signature images): zero times, the layer's diff id.
    public var configBytes: Data {
        Data(("{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{\"created\":\"0001-01-01T00:00:00Z\"}],"
            + "\"os\":\"\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\(JSONText.quoted(payloadDigest))]},\"config\":{}}").utf8)
    }

    public var configDigest: String { OCIManifest.digest(of: configBytes) }

    public var manifestBytes: Data {
        let config = configBytes
        return Data(("{\"schemaVersion\":2,\"mediaType\":\(JSONText.quoted(OCIManifest.manifestMediaType)),"
            + "\"config\":{\"mediaType\":\(JSONText.quoted(Self.configMediaType)),\"size\":\(config.count),\"digest\":\(JSONText.quoted(OCIManifest.digest(of: config)))},"
            + "\"layers\":[{\"mediaType\":\(JSONText.quoted(Self.payloadMediaType)),\"size\":\(payload.count),\"digest\":\(JSONText.quoted(payloadDigest)),"
            + "\"annotations\":{\(JSONText.quoted(Self.signatureAnnotation)):\(JSONText.quoted(signature))}}]}").utf8)
    }

    public var manifestDigest: String { OCIManifest.digest(of: manifestBytes) }
}

/// Why a signature was refused. `code` is stable (metrics labels, status reasons).
public enum SignatureFailure: Error, CustomStringConvertible, Equatable {
    /// The relay sent no signature (a relay older than signing, or signing turned off).
    case missing
    case malformedPayload(String)
    case malformedSignature
    case wrongManifest(expected: String, signed: String)
    case untrusted(keyIDs: String)

    public var description: String {
        switch self {
        case .missing:
            "the artifact carries no signature: the relay is older than signing (before relay-server/0.3) or does not sign; "
                + "upgrade the relay, or remove trust.relayPublicKeys from agent.yaml to accept unsigned artifacts"
        case .malformedPayload(let detail): "the signature's payload is unusable: \(detail)"
        case .malformedSignature: "the signature is not base64 DER"
        case .wrongManifest(let expected, let signed):
            "the signature is for manifest \(signed), not \(expected): the artifact or its description was changed after signing"
        case .untrusted(let ids):
            "the signature does not verify under any trusted relay key (\(ids)): it was altered, or made by a key not in trust.relayPublicKeys"
        }
    }

    public var code: String {
        switch self {
        case .missing: "unsigned"
        case .malformedPayload: "malformed_payload"
        case .malformedSignature: "malformed_signature"
        case .wrongManifest: "wrong_manifest"
        case .untrusted: "bad_signature"
        }
    }
}
