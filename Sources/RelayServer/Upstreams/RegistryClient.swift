import ArtifactMirror
import Foundation
import NIOHTTP1

/// The read side of the OCI distribution API against one repository: tags, manifests and
/// blobs, with the registry's own authentication: a `401` with `WWW-Authenticate: Bearer
/// realm=…,service=…,scope=…` is answered by asking the realm for a token (with the
/// configured credentials, if any) and retrying with it; `Basic` by retrying with the
/// credentials. A second 401 is final: `upstream_unauthorized`, never a loop.
actor RegistryClient {
    let http: UpstreamHTTP
    let upstream: RegistryUpstream
    let repository: String
    private var authorization: String?

    static let manifestAccept = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    ].joined(separator: ", ")
    static let maxTagPages = 100
    static let maxTagsBody = 4 << 20
    static let maxTags = 100_000

    init(http: UpstreamHTTP, upstream: RegistryUpstream, repository: String) {
        self.http = http
        self.upstream = upstream
        self.repository = repository
    }

    private var where_: String { "oci://\(upstream.host)/\(repository)" }

    /// Every tag, following `Link: <…>; rel="next"` pages (bounded).
    func tags() async throws(UpstreamError) -> [String] {
        var tags: [String] = []
        var next: String? = "\(upstream.baseURL)/v2/\(repository)/tags/list?n=1000"
        var pages = 0
        while let url = next {
            pages += 1
            guard pages <= Self.maxTagPages, tags.count <= Self.maxTags else {
                throw UpstreamError(.tooLarge, "\(where_) lists more than \(Self.maxTags) tags or \(Self.maxTagPages) pages; "
                    + "the highest version cannot be chosen from a partial list: pin a version or tag")
            }
            let reply = try await authorized(url, limit: Self.maxTagsBody, accept: "application/json")
            guard reply.status == .ok else { throw failure(reply, "list the tags of \(where_)") }
            struct TagList: Decodable { var tags: [String]? }
            guard let list = try? JSONDecoder().decode(TagList.self, from: reply.body) else {
                throw UpstreamError(.badResponse, "\(where_): the tag list is not JSON {\"tags\": […]}")
            }
            tags += list.tags ?? []
            next = Self.nextLink(reply.headers.first(name: "link"), base: reply.url)
        }
        return tags
    }

    /// The manifest at `reference` (tag or digest): its bytes, media type and digest. The
    /// digest is computed here; a digest reference or the registry's `Docker-Content-Digest`
    /// that disagrees with the bytes is a mismatch.
    func manifest(_ reference: String) async throws(UpstreamError) -> (bytes: Data, mediaType: String, digest: String) {
        let reply = try await authorized("\(upstream.baseURL)/v2/\(repository)/manifests/\(reference)",
                                          limit: OCIPayload.maxManifestBytes, accept: Self.manifestAccept)
        guard reply.status == .ok else { throw failure(reply, "read the manifest \(reference) of \(where_)") }
        let digest = OCIPayload.digest(of: reply.body)
        if reference.hasPrefix("sha256:"), reference != digest {
            throw UpstreamError(.digestMismatch, "\(where_): the manifest asked for as \(reference) hashes to \(digest); not used")
        }
        if let claimed = reply.headers.first(name: "docker-content-digest"), claimed.hasPrefix("sha256:"), claimed != digest {
            throw UpstreamError(.digestMismatch, "\(where_): the registry says manifest \(reference) is \(claimed), its bytes hash to \(digest); not used")
        }
        var mediaType = reply.headers.first(name: "content-type")?.split(separator: ";").first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
        if !OCIPayload.manifestMediaTypes.contains(mediaType) {
            // Some registries answer application/json: the manifest's own field decides then.
            struct Declared: Decodable { var mediaType: String? }
            if let declared = (try? JSONDecoder().decode(Declared.self, from: reply.body))?.mediaType { mediaType = declared }
            else if mediaType == "application/json" || mediaType.isEmpty { mediaType = "application/vnd.oci.image.manifest.v1+json" }
        }
        return (reply.body, mediaType, digest)
    }

    /// Whether a manifest exists at `reference` (a cosign signature tag, say).
    func manifestIfPresent(_ reference: String) async throws(UpstreamError) -> (bytes: Data, mediaType: String, digest: String)? {
        do { return try await manifest(reference) } catch where error.code == .notFound { return nil }
    }

    /// A small blob, checked against its descriptor.
    func blob(_ descriptor: OCIPayload.Descriptor) async throws(UpstreamError) -> Data {
        guard descriptor.size <= UInt64(OCIPayload.maxInlineBlobBytes) else {
            throw UpstreamError(.tooLarge, "\(where_): the blob \(descriptor.digest) is \(descriptor.size) bytes, more than \(OCIPayload.maxInlineBlobBytes)")
        }
        let reply = try await authorized("\(upstream.baseURL)/v2/\(repository)/blobs/\(descriptor.digest)",
                                          limit: Int(descriptor.size), accept: nil)
        guard reply.status == .ok else { throw failure(reply, "read the blob \(descriptor.digest) of \(where_)") }
        let digest = OCIPayload.digest(of: reply.body)
        guard digest == descriptor.digest, UInt64(reply.body.count) == descriptor.size else {
            throw UpstreamError(.digestMismatch, "\(where_): the blob \(descriptor.digest) (\(descriptor.size) bytes) arrived as \(digest) (\(reply.body.count) bytes); not used")
        }
        return reply.body
    }

    /// A large blob into `path`, checked against its descriptor.
    func download(_ descriptor: OCIPayload.Descriptor, to path: String, limit: UInt64) async throws(UpstreamError) {
        guard descriptor.size <= limit else {
            throw UpstreamError(.tooLarge, "\(where_): the layer \(descriptor.digest) is \(descriptor.size) bytes, more than limits.maxArtifactBytes (\(limit))")
        }
        let url = "\(upstream.baseURL)/v2/\(repository)/blobs/\(descriptor.digest)"
        let cached = authorization != nil
        var result = try await http.download(url, to: path, limit: descriptor.size, headers: headers(accept: nil))
        if result.reply.status == .unauthorized {
            try await answer(challenge: result.reply, replacing: cached)
            result = try await http.download(url, to: path, limit: descriptor.size, headers: headers(accept: nil))
        }
        guard result.reply.status == .ok else { throw failure(result.reply, "read the layer \(descriptor.digest) of \(where_)") }
        guard result.digest == descriptor.digest, result.size == descriptor.size else {
            throw UpstreamError(.digestMismatch, "\(where_): the layer \(descriptor.digest) (\(descriptor.size) bytes) arrived as \(result.digest) (\(result.size) bytes); not used")
        }
    }

    // MARK: - Authentication

    private func authorized(_ url: String, limit: Int, accept: String?) async throws(UpstreamError) -> UpstreamHTTP.Reply {
        let cached = authorization != nil
        let reply = try await http.get(url, limit: limit, headers: headers(accept: accept))
        guard reply.status == .unauthorized else { return reply }
        // One answer per request: a second 401 is reported by the caller, never looped on.
        try await answer(challenge: reply, replacing: cached)
        return try await http.get(url, limit: limit, headers: headers(accept: accept))
    }

    /// Headers for a URL: the credentials only for the registry's own origin.
    private func headers(accept: String?) -> @Sendable (String) -> HTTPHeaders {
        let authorization = self.authorization
        let origin = UpstreamHTTP.origin(of: upstream.baseURL)
        return { url in
            var headers = HTTPHeaders()
            if let accept { headers.add(name: "Accept", value: accept) }
            if let authorization, UpstreamHTTP.origin(of: url) == origin { headers.add(name: "Authorization", value: authorization) }
            return headers
        }
    }

    /// Sets `authorization` from a 401's challenge (`replacing` a cached token that expired).
    /// Only the registry's own 401 is answered: a redirect target (object storage) asking for
    /// credentials gets none.
    private func answer(challenge reply: UpstreamHTTP.Reply, replacing cached: Bool) async throws(UpstreamError) {
        guard UpstreamHTTP.origin(of: reply.url) == UpstreamHTTP.origin(of: upstream.baseURL) else {
            throw UpstreamError(.unauthorized, "\(UpstreamHTTP.redacted(reply.url)), where \(where_) redirected, answered 401; credentials are sent to the registry only")
        }
        if cached { authorization = nil }
        guard let header = reply.headers.first(name: "www-authenticate"), let challenge = AuthChallenge(header) else {
            throw UpstreamError(.unauthorized, "\(where_) answered 401 without a usable WWW-Authenticate challenge")
        }
        switch challenge.scheme {
        case "basic":
            guard let basic = UpstreamHTTP.basic(upstream.access) else {
                throw UpstreamError(.unauthorized, "\(where_) asks for credentials: set auth.username and auth.passwordFile")
            }
            authorization = basic
        case "bearer":
            guard let realm = challenge.parameters["realm"], var components = URLComponents(string: realm),
                  components.scheme == "https" || (components.scheme == "http" && upstream.access.insecure) else {
                throw UpstreamError(.unauthorized, "\(where_): the Bearer challenge has no usable realm (an https URL; http only with insecure: true)")
            }
            var query = components.queryItems ?? []
            if let service = challenge.parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            query.append(URLQueryItem(name: "scope", value: challenge.parameters["scope"] ?? "repository:\(repository):pull"))
            components.queryItems = query
            guard let tokenURL = components.string else { throw UpstreamError(.unauthorized, "\(where_): unusable token realm") }
            let basic = UpstreamHTTP.basic(upstream.access)
            let realmOrigin = UpstreamHTTP.origin(of: tokenURL)
            let tokenReply = try await http.get(tokenURL, limit: 1 << 20) { url in
                var headers = HTTPHeaders()
                if let basic, UpstreamHTTP.origin(of: url) == realmOrigin { headers.add(name: "Authorization", value: basic) }
                return headers
            }
            guard tokenReply.status == .ok else {
                throw UpstreamError(.unauthorized, "the token service \(UpstreamHTTP.redacted(tokenURL)) answered \(tokenReply.status.code) for \(where_): "
                    + (basic == nil ? "set auth.username and auth.passwordFile" : "check auth.username and auth.passwordFile"))
            }
            struct Token: Decodable { var token: String?; var access_token: String? }
            guard let token = (try? JSONDecoder().decode(Token.self, from: tokenReply.body)).flatMap({ $0.token ?? $0.access_token }),
                  !token.isEmpty else {
                throw UpstreamError(.unauthorized, "the token service for \(where_) answered without a token")
            }
            authorization = "Bearer \(token)"
        default:
            throw UpstreamError(.unauthorized, "\(where_) asks for the unsupported authentication scheme '\(challenge.scheme)'")
        }
    }

    private func failure(_ reply: UpstreamHTTP.Reply, _ action: String) -> UpstreamError {
        let detail = String(decoding: reply.body.prefix(300), as: UTF8.self)
        switch reply.status.code {
        case 401, 403:
            authorization = nil
            return UpstreamError(.unauthorized, "cannot \(action): \(reply.status.code) after authenticating (\(detail)); "
                + (upstream.access.username == nil ? "set auth.username and auth.passwordFile" : "check auth.username, auth.passwordFile and the account's pull access"))
        case 404: return UpstreamError(.notFound, "cannot \(action): 404 (\(detail)); check the url, chart and version or ref")
        default: return UpstreamError(.badResponse, "cannot \(action): HTTP \(reply.status.code) (\(detail))")
        }
    }

    /// The next page from a `Link: <url>; rel="next"` header.
    static func nextLink(_ header: String?, base: String) -> String? {
        guard let header, header.contains("rel=\"next\"") || header.contains("rel=next"),
              let open = header.firstIndex(of: "<"), let close = header.firstIndex(of: ">"), open < close else { return nil }
        let target = String(header[header.index(after: open)..<close])
        return URL(string: target, relativeTo: URL(string: base))?.absoluteString
    }
}

/// `WWW-Authenticate: <scheme> key="value", …` (RFC 7235, one challenge).
struct AuthChallenge: Sendable {
    var scheme: String
    var parameters: [String: String]

    init?(_ header: String) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        let scheme = trimmed.prefix { !$0.isWhitespace }
        guard !scheme.isEmpty else { return nil }
        self.scheme = scheme.lowercased()
        var parameters: [String: String] = [:]
        var rest = Substring(trimmed.dropFirst(scheme.count))
        while true {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped { value.append(character); escaped = false } else if character == "\\" { escaped = true } else if character == "\"" { break } else { value.append(character) }
                }
            } else {
                value = String(rest.prefix { $0 != "," })
                rest = rest.dropFirst(value.count)
            }
            parameters[key] = value.trimmingCharacters(in: .whitespaces)
        }
        self.parameters = parameters
    }
}
