import Foundation

/// Why a Helm chart or OCI artifact could not be mirrored. Each has a stable code (logs and
/// `relay_upstream_failures_total{source,code}`) and says what to do next. Nothing is
/// delivered to agents when one is thrown.
public struct UpstreamError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The upstream refused the credentials (or wants some and none are configured).
        case unauthorized = "upstream_unauthorized"
        /// No such repository, chart, version, tag or blob.
        case notFound = "upstream_not_found"
        /// Bytes that do not match the digest the index, registry or manifest gives.
        case digestMismatch = "upstream_digest_mismatch"
        /// Larger than a limit (manifest, index, blob, artifact).
        case tooLarge = "upstream_too_large"
        /// A response Relay cannot use (status, JSON, media type).
        case badResponse = "upstream_bad_response"
        /// Content refused by Relay's checks (a chart with links or paths outside it).
        case refusedContent = "upstream_refused_content"
        /// Could not connect, TLS failed, timed out.
        case unreachable = "upstream_unreachable"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
