import ArtifactMirror
import Crypto
import Foundation
import RelayShared

/// The OCI image manifest and config blob for one published artifact, shaped as
/// `flux push artifact` makes them (spec §4.1): one layer holding the artifact's exact bytes,
/// the Flux config media type, and the source/revision/created annotations.
///
/// The bytes are a pure function of the artifact record, so the manifest digest never
/// changes for the same artifact: Flux sees a new digest only when the content or its
/// revision changes.
public struct OCIManifest: Sendable, Equatable {
    public static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"
    public static let configMediaType = "application/vnd.cncf.flux.config.v1+json"
    public static let layerMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"

    /// Nothing in Flux reads the config blob (spec §4.1); an empty JSON object keeps every
    /// client that fetches it happy.
    public static let configBytes = Data("{}".utf8)
    public static let configDigest = OCIManifest.digest(of: configBytes)

    public let bytes: Data
    public let digest: String

    public init(record: ArtifactRecord) {
        let created = Self.timestamp(record.packagedAt ?? record.createdAt)
        let annotations = [
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.revision": record.revision,
            "org.opencontainers.image.source": record.origin ?? record.source,
        ]
        // Field order as go-containerregistry writes it: schemaVersion, mediaType, config,
        // layers, annotations (map keys sorted, as Go's encoder does).
        var json = "{\"schemaVersion\":2,\"mediaType\":\(Self.quoted(Self.manifestMediaType)),"
        json += "\"config\":{\"mediaType\":\(Self.quoted(Self.configMediaType)),\"digest\":\(Self.quoted(Self.configDigest)),\"size\":\(Self.configBytes.count)},"
        json += "\"layers\":[{\"mediaType\":\(Self.quoted(Self.layerMediaType)),\"digest\":\(Self.quoted(record.digest)),\"size\":\(record.size)}],"
        json += "\"annotations\":{"
        json += annotations.keys.sorted().map { "\(Self.quoted($0)):\(Self.quoted(annotations[$0]!))" }.joined(separator: ",")
        json += "}}"
        bytes = Data(json.utf8)
        digest = Self.digest(of: bytes)
    }

    public static func digest(of data: Data) -> String {
        "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// RFC 3339 in UTC, whole seconds (what Go's time.RFC3339 prints for UTC times).
    static func timestamp(_ date: Date) -> String { RFC3339.format(date) }

    /// A JSON string literal (JSONEncoder escapes exactly what JSON requires).
    static func quoted(_ text: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(text)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}
