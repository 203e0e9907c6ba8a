import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// HTTP to one upstream (a Helm repository or an OCI registry): bounded bodies, redirects
/// followed by hand so that credentials never go to another host (a registry's blob
/// redirect to object storage, a chart URL on a CDN), and downloads streamed to a file while
/// hashed.
struct UpstreamHTTP: Sendable {
    struct Reply: Sendable {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: Data
        /// The URL that answered (after redirects).
        var url: String
    }

    let client: HTTPClient
    let readTimeout: TimeAmount
    static let maxRedirects = 5
    /// Longest a whole body may take: a server trickling bytes under the read timeout does not
    /// hold the source's packaging lock for ever. Small bodies, and large ones (at least 1 MiB/s
    /// beyond the first 10 minutes).
    static let smallBodyDeadline: Duration = .seconds(120)
    static func downloadDeadline(bytes: UInt64) -> Duration { .seconds(600 + Int64(bytes >> 20)) }

    /// A client trusting `caFile` (PEM) besides nothing else when set, the system's roots otherwise.
    static func make(access: UpstreamAccess) throws(UpstreamError) -> UpstreamHTTP {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = access.caFile {
            do { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) } catch {
                throw UpstreamError(.unreachable, "cannot read the CA bundle \(caFile): \(error)")
            }
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(60))
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        return UpstreamHTTP(client: HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration), readTimeout: .seconds(60))
    }

    func shutdown() async { try? await client.shutdown() }

    /// GET with a body of at most `limit` bytes. `headers(url)` gives the headers for each
    /// URL of the redirect chain (credentials only for the upstream's own host).
    func get(_ url: String, limit: Int, headers: @Sendable (String) -> HTTPHeaders) async throws(UpstreamError) -> Reply {
        try await send(url, method: .GET, headers: headers) { response, url in
            var declared: Int?
            if let length = response.headers.first(name: "content-length") { declared = Int(length) }
            if let declared, declared > limit {
                throw UpstreamError(.tooLarge, "\(Self.redacted(url)) is \(declared) bytes, more than the \(limit) accepted")
            }
            var body = Data()
            let started = ContinuousClock.now
            for try await chunk in response.body {
                body.append(contentsOf: chunk.readableBytesView)
                if body.count > limit {
                    throw UpstreamError(.tooLarge, "\(Self.redacted(url)) is more than the \(limit) bytes accepted")
                }
                if ContinuousClock.now - started > Self.smallBodyDeadline {
                    throw UpstreamError(.unreachable, "\(Self.redacted(url)) took more than \(Self.smallBodyDeadline) to send \(body.count) bytes")
                }
            }
            return Reply(status: response.status, headers: response.headers, body: body, url: url)
        }
    }

    /// GET into `path` (created), at most `limit` bytes; returns the reply's status and
    /// headers, the bytes' digest and count. A non-2xx reply's body is read as an error text.
    func download(_ url: String, to path: String, limit: UInt64,
                  headers: @Sendable (String) -> HTTPHeaders) async throws(UpstreamError) -> (reply: Reply, digest: String, size: UInt64) {
        try await send(url, method: .GET, headers: headers) { response, url in
            guard response.status == .ok else {
                var body = Data()
                for try await chunk in response.body {
                    body.append(contentsOf: chunk.readableBytesView.prefix(8192 - body.count))
                    if body.count >= 8192 { break }  // the rest of an error page is not read
                }
                return (Reply(status: response.status, headers: response.headers, body: body, url: url), "", 0)
            }
            if let length = response.headers.first(name: "content-length").flatMap(UInt64.init), length > limit {
                throw UpstreamError(.tooLarge, "\(Self.redacted(url)) is \(length) bytes, more than the \(limit) accepted")
            }
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw UpstreamError(.unreachable, "cannot create \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var hasher = SHA256()
            var size: UInt64 = 0
            let started = ContinuousClock.now
            let deadline = Self.downloadDeadline(bytes: limit == .max ? 0 : limit)
            for try await chunk in response.body {
                size += UInt64(chunk.readableBytes)
                guard size <= limit else { throw UpstreamError(.tooLarge, "\(Self.redacted(url)) is more than the \(limit) bytes accepted") }
                guard ContinuousClock.now - started <= deadline else {
                    throw UpstreamError(.unreachable, "\(Self.redacted(url)) took more than \(deadline) (\(size) bytes so far); try again later or check the upstream")
                }
                try chunk.readableBytesView.withUnsafeBytes { raw in
                    hasher.update(bufferPointer: raw)
                    var offset = 0
                    while offset < raw.count {
                        let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                        guard written > 0 else { throw UpstreamError(.unreachable, "cannot write \(path): \(String(cString: strerror(errno)))") }
                        offset += written
                    }
                }
            }
            guard fsync(fd) == 0 else { throw UpstreamError(.unreachable, "cannot write \(path): \(String(cString: strerror(errno)))") }
            let digest = "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
            return (Reply(status: response.status, headers: response.headers, body: Data(), url: url), digest, size)
        }
    }

    private func send<T: Sendable>(_ url: String, method: HTTPMethod, headers: @Sendable (String) -> HTTPHeaders,
                                   _ read: (HTTPClientResponse, String) async throws -> T) async throws(UpstreamError) -> T {
        var current = url
        for _ in 0...Self.maxRedirects {
            var request = HTTPClientRequest(url: current)
            request.method = method
            request.headers = headers(current)
            let response: HTTPClientResponse
            do { response = try await execute(request) } catch {
                throw UpstreamError(.unreachable, "\(Self.redacted(current)): \(error)")
            }
            if [301, 302, 303, 307, 308].contains(response.status.code), let location = response.headers.first(name: "location"),
               let next = URL(string: location, relativeTo: URL(string: current))?.absoluteString {
                current = next
                continue
            }
            do { return try await read(response, current) } catch let error as UpstreamError { throw error } catch {
                throw UpstreamError(.unreachable, "\(Self.redacted(current)): \(error)")
            }
        }
        throw UpstreamError(.badResponse, "\(Self.redacted(url)): more than \(Self.maxRedirects) redirects")
    }

    /// `client.execute`, sent once more when a GET or HEAD went out on a kept-alive connection
    /// the server had just closed (lighttpd and others close idle connections at their own
    /// timeout; the request and the close cross on the wire). Nothing was answered, so asking
    /// again is safe for these methods.
    private func execute(_ request: HTTPClientRequest) async throws -> HTTPClientResponse {
        do {
            return try await client.execute(request, timeout: readTimeout)
        } catch let error as HTTPClientError where error == .remoteConnectionClosed && (request.method == .GET || request.method == .HEAD) {
            return try await client.execute(request, timeout: readTimeout)
        }
    }

    /// scheme://host[:port] of a URL, to decide where credentials may go.
    static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme, let host = components.host else { return nil }
        return "\(scheme)://\(host.lowercased())" + (components.port.map { ":\($0)" } ?? "")
    }

    /// A URL for messages: no query (signed storage URLs carry secrets there), no user info.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return "<unparseable URL>" }
        components.query = nil
        components.user = nil
        components.password = nil
        return components.string ?? "<URL>"
    }

    static func basic(_ access: UpstreamAccess) -> String? {
        guard let username = access.username, let password = access.password else { return nil }
        return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }
}
