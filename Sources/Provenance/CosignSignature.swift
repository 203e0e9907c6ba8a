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

    /// The manifest digest and repository a payload names, if it is a cosign container image
    /// signature. Call it only on a payload whose signature was verified (or to explain a refusal).
    public static func signedClaims(in payload: Data) throws(SignatureFailure) -> (digest: String, reference: String) {
        struct Payload: Decodable {
            struct Critical: Decodable {
                struct Identity: Decodable {
                    var reference: String?
                    enum CodingKeys: String, CodingKey { case reference = "docker-reference" }
                }
                struct Image: Decodable {
                    var digest: String
                    enum CodingKeys: String, CodingKey { case digest = "docker-manifest-digest" }
                }
                var identity: Identity?
                var image: Image
                var type: String
            }
            var critical: Critical
        }
        guard payload.count <= 64 << 10 else { throw .malformedPayload("\(payload.count) bytes; a simple-signing payload is a few hundred") }
        let decoded: Payload
        do { decoded = try JSONDecoder().decode(Payload.self, from: payload) } catch {
            throw .malformedPayload("not a simple-signing payload: \(error)")
        }
        guard decoded.critical.type == payloadType else {
            throw .malformedPayload("critical.type is '\(decoded.critical.type.prefix(80))', not '\(payloadType)'")
        }
        return (decoded.critical.image.digest, decoded.critical.identity?.reference ?? "")
    }

    /// The manifest digest the payload names.
    public static func signedDigest(in payload: Data) throws(SignatureFailure) -> String { try signedClaims(in: payload).digest }

    /// Checks that one of `keys` made this signature and that it signs `manifestDigest` (and,
    /// when given, names `reference`, the source it was signed for: the manifest does not name
    /// its source, so a signature for one source cannot be replayed as another's). The
    /// signature is checked over the raw payload before the payload is parsed. Returns the key.
    public func verify(manifestDigest: String, reference: String? = nil, keys: TrustedKeys,
                       signedBy keyID: String? = nil) throws(SignatureFailure) -> TrustedKey {
        guard let raw = Data(base64Encoded: signature) else { throw .malformedSignature }
        guard let signer = keys.signer(of: payload, signature: raw) else {
            throw .untrusted(keyIDs: keys.ids + (keyID.map { $0.isEmpty ? "" : "; the relay says key \($0) made it" } ?? ""))
        }
        let claims = try Self.signedClaims(in: payload)
        guard claims.digest == manifestDigest else { throw .wrongManifest(expected: manifestDigest, signed: claims.digest) }
        if let reference, claims.reference != reference {
            throw .wrongSource(expected: reference, signed: String(claims.reference.prefix(200)))
        }
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
    public var configBytes: Data { Self.image(layers: [layer]).config }

    public var configDigest: String { OCIManifest.digest(of: configBytes) }

    public var manifestBytes: Data {
        Self.image(layers: [layer]).manifest
    }

    /// This signature as one layer of a signature image.
    public var layer: ImageLayer {
        ImageLayer(mediaType: Self.payloadMediaType, data: payload, annotations: [Self.signatureAnnotation: signature])
    }

    /// One layer of a cosign signature image.
    public struct ImageLayer: Sendable, Codable, Hashable {
        public var mediaType: String
        public var data: Data
        public var annotations: [String: String]
        public init(mediaType: String, data: Data, annotations: [String: String]) {
            self.mediaType = mediaType
            self.data = data
            self.annotations = annotations
        }
    }

    /// A signature image holding several signatures, one per layer (as cosign appends them):
    /// its manifest and config. With one layer it is exactly `manifestBytes`/`configBytes`.
    public static func image(layers: [ImageLayer]) -> (manifest: Data, config: Data) {
        let diffIDs = layers.map { JSONText.quoted(OCIManifest.digest(of: $0.data)) }.joined(separator: ",")
        let history = layers.map { _ in "{\"created\":\"0001-01-01T00:00:00Z\"}" }.joined(separator: ",")
        let config = Data(("{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[\(history)],"
            + "\"os\":\"\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\(diffIDs)]},\"config\":{}}").utf8)
        let entries = layers.map { layer in
            "{\"mediaType\":\(JSONText.quoted(layer.mediaType)),\"size\":\(layer.data.count),\"digest\":\(JSONText.quoted(OCIManifest.digest(of: layer.data))),"
                + "\"annotations\":{" + layer.annotations.keys.sorted().map { "\(JSONText.quoted($0)):\(JSONText.quoted(layer.annotations[$0]!))" }.joined(separator: ",") + "}}"
        }.joined(separator: ",")
        let manifest = Data(("{\"schemaVersion\":2,\"mediaType\":\(JSONText.quoted(OCIManifest.manifestMediaType)),"
            + "\"config\":{\"mediaType\":\(JSONText.quoted(Self.configMediaType)),\"size\":\(config.count),\"digest\":\(JSONText.quoted(OCIManifest.digest(of: config)))},"
            + "\"layers\":[\(entries)]}").utf8)
        return (manifest, config)
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
    case wrongSource(expected: String, signed: String)

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
            "the signature does not verify under any trusted relay key (trusted: \(ids)): it was altered in transit, or the relay signs with a key "
                + "not in trust.relayPublicKeys (after a rotation: add the output of `relay-server keys public`)"
        case .wrongSource(let expected, let signed):
            "the signature was made for source '\(signed)', not '\(expected)': a signed artifact of one source was offered as another's"
        }
    }

    public var code: String {
        switch self {
        case .missing: "unsigned"
        case .malformedPayload: "malformed_payload"
        case .malformedSignature: "malformed_signature"
        case .wrongManifest: "wrong_manifest"
        case .untrusted: "bad_signature"
        case .wrongSource: "wrong_source"
        }
    }
}
