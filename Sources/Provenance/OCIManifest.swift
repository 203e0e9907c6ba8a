import Crypto
import Foundation
import RelayShared

/// The OCI image manifest and config blob for one artifact, shaped as `flux push artifact`
/// makes them (spec §4.1): one layer holding the artifact's exact bytes, the Flux config
/// media type, and the source/revision/created annotations.
///
/// The bytes are a pure function of the artifact's description (revision, origin, digest,
/// size, packaging time in whole seconds), so the relay, the agent and a bundle all compute
/// the same manifest and its digest: the relay signs it, the agent serves it, and Flux sees a
/// new digest only when the content or its revision changes.
public struct OCIManifest: Sendable, Equatable {
    public static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"
    public static let indexMediaType = "application/vnd.oci.image.index.v1+json"
    public static let configMediaType = "application/vnd.cncf.flux.config.v1+json"
    public static let layerMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"

    /// Nothing in Flux reads the config blob (spec §4.1); an empty JSON object keeps every
    /// client that fetches it happy.
    public static let configBytes = Data("{}".utf8)
    public static let configDigest = OCIManifest.digest(of: configBytes)

    public let bytes: Data
    public let digest: String
    /// Content-Type when served.
    public let mediaType: String

    /// A manifest carried as is (a Helm chart's or an OCI artifact's, `OCIPayload`).
    public init(bytes: Data, mediaType: String) {
        self.bytes = bytes
        self.mediaType = mediaType
        digest = Self.digest(of: bytes)
    }

    /// - Parameters:
    ///   - origin: the source's remote without credentials (or the source name).
    ///   - created: when the relay packaged it; only whole seconds are used.
    public init(revision: String, origin: String, digest: String, size: UInt64, created: Date) {
        let annotations = [
            "org.opencontainers.image.created": Self.timestamp(created),
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.source": origin,
        ]
        // Field order as go-containerregistry writes it: schemaVersion, mediaType, config,
        // layers, annotations (map keys sorted, as Go's encoder does).
        var json = "{\"schemaVersion\":2,\"mediaType\":\(JSONText.quoted(Self.manifestMediaType)),"
        json += "\"config\":{\"mediaType\":\(JSONText.quoted(Self.configMediaType)),\"digest\":\(JSONText.quoted(Self.configDigest)),\"size\":\(Self.configBytes.count)},"
        json += "\"layers\":[{\"mediaType\":\(JSONText.quoted(Self.layerMediaType)),\"digest\":\(JSONText.quoted(digest)),\"size\":\(size)}],"
        json += "\"annotations\":{"
        json += annotations.keys.sorted().map { "\(JSONText.quoted($0)):\(JSONText.quoted(annotations[$0]!))" }.joined(separator: ",")
        json += "}}"
        bytes = Data(json.utf8)
        self.digest = Self.digest(of: bytes)
        mediaType = Self.manifestMediaType
    }

    /// The same manifest from the wire's packaging time (Unix milliseconds, 0 = unknown).
    public init(revision: String, origin: String, digest: String, size: UInt64, createdUnixMs: Int64, fallback: Date) {
        self.init(revision: revision, origin: origin, digest: digest, size: size,
                  created: createdUnixMs > 0 ? Date(timeIntervalSince1970: Double(createdUnixMs) / 1000) : fallback)
    }

    public static func digest(of data: Data) -> String { SHA256Digest(of: data).description }

    /// RFC 3339 in UTC, whole seconds (what Go's time.RFC3339 prints for UTC times).
    public static func timestamp(_ date: Date) -> String { RFC3339.format(date) }
}

/// JSON text built by hand where the exact bytes matter (they are hashed and signed).
public enum JSONText {
    /// A JSON string literal (JSONEncoder escapes exactly what JSON requires).
    public static func quoted(_ text: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(text)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}
