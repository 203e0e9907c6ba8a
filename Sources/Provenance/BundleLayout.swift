import Foundation

/// Where things are in a relay bundle (an OCI image layout in a ustar tar) and the order the
/// exporter writes and the importer requires: `oci-layout`, the statement, its signature,
/// `index.json`, then the blobs. The statement lists every other file with size and digest.
public enum BundleLayout {
    public static let ociLayoutPath = "oci-layout"
    public static let statementPath = "relay-bundle/statement.json"
    public static let signaturePath = "relay-bundle/statement.sig"
    public static let indexPath = "index.json"
    public static let ociLayoutBytes = Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8)
    public static let refNameAnnotation = "org.opencontainers.image.ref.name"
    /// Largest statement (and signature file) an importer reads into memory.
    public static let maxStatementBytes: UInt64 = 16 << 20
    /// Smallest `--max-size`: the statement must fit in the first part.
    public static let minimumPartBytes: UInt64 = 1 << 20

    public static func blobPath(_ digest: SHA256Digest) -> String { "blobs/sha256/" + digest.hex }

    /// The statement's signature as the bundle carries it (`relay-bundle/statement.sig`).
    public struct Signature: Sendable, Codable, Equatable {
        public var keyID: String
        /// Base64 of the ASN.1 DER ECDSA P-256 signature over the statement's exact bytes.
        public var signature: String
        public init(keyID: String, signature: String) {
            self.keyID = keyID
            self.signature = signature
        }
        public func encoded() -> Data { (try? SignedEnvelope.encoder.encode(self)) ?? Data() }
    }

    /// A descriptor of `index.json`.
    public struct IndexEntry: Sendable {
        public var digest: SHA256Digest
        public var size: Int
        public var refName: String
        public init(digest: SHA256Digest, size: Int, refName: String) {
            self.digest = digest
            self.size = size
            self.refName = refName
        }
    }

    /// `index.json`: one OCI image manifest descriptor per entry, named by its ref.
    public static func index(_ entries: [IndexEntry]) -> Data {
        let manifests = entries.map { entry in
            "{\"mediaType\":\(JSONText.quoted(OCIManifest.manifestMediaType)),\"digest\":\(JSONText.quoted(entry.digest.description)),"
                + "\"size\":\(entry.size),\"annotations\":{\(JSONText.quoted(refNameAnnotation)):\(JSONText.quoted(entry.refName))}}"
        }
        return Data(("{\"schemaVersion\":2,\"mediaType\":\(JSONText.quoted(OCIManifest.indexMediaType)),\"manifests\":["
            + manifests.joined(separator: ",") + "]}").utf8)
    }

    /// Whether `name` is usable as an OCI layout ref name (image-spec annotations: components
    /// of alphanumerics joined by `-._:@/+` or `--`), so `skopeo … oci-archive:FILE:<name>` finds it.
    public static func isValidRefName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128 else { return false }
        let separators = Set("-._:@/+")
        var previousWasSeparator = true
        for character in name {
            if character.isASCII && (character.isLetter || character.isNumber) {
                previousWasSeparator = false
            } else if separators.contains(character) {
                if previousWasSeparator && character != "-" { return false }
                previousWasSeparator = true
            } else {
                return false
            }
        }
        return !previousWasSeparator
    }
}
