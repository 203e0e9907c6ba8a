/// A request path under `/v2/`, parsed by the distribution spec's grammar. Parsing looks at
/// the raw path only: anything that is not a valid name, tag or digest never reaches the
/// file system.
enum OCIRoute: Equatable {
    case base
    case manifest(name: String, reference: String)
    case blob(name: String, digest: String)
    case tags(name: String)
    /// `GET /v2/<name>/referrers/<digest>` (OCI 1.1), which this registry answers with 404.
    case referrers(name: String, digest: String)
    /// A token request for Bearer pull authentication.
    case token
    case notFound

    static func parse(_ path: String) -> OCIRoute {
        if path == "/v2" || path == "/v2/" { return .base }
        if path == "/v2/token" { return .token }
        guard path.hasPrefix("/v2/") else { return .notFound }
        let rest = String(path.dropFirst(4))
        if rest.hasSuffix("/tags/list") {
            return .tags(name: String(rest.dropLast("/tags/list".count)))
        }
        if let range = rest.range(of: "/manifests/", options: .backwards) {
            return .manifest(name: String(rest[..<range.lowerBound]), reference: String(rest[range.upperBound...]))
        }
        if let range = rest.range(of: "/blobs/", options: .backwards) {
            return .blob(name: String(rest[..<range.lowerBound]), digest: String(rest[range.upperBound...]))
        }
        if let range = rest.range(of: "/referrers/", options: .backwards), !rest[range.upperBound...].contains("/") {
            return .referrers(name: String(rest[..<range.lowerBound]), digest: String(rest[range.upperBound...]))
        }
        return .notFound
    }
}
