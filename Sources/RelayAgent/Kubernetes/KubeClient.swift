import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// A Kubernetes resource type the agent reads or writes.
public struct KubeResource: Sendable, Hashable {
    public var group: String
    public var version: String
    public var plural: String
    public var kind: String

    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    var basePath: String { group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)" }

    public static let externalArtifact = KubeResource(group: "source.toolkit.fluxcd.io", version: "v1", plural: "externalartifacts", kind: "ExternalArtifact")
    public static let ociRepository = KubeResource(group: "source.toolkit.fluxcd.io", version: "v1", plural: "ocirepositories", kind: "OCIRepository")

    func path(namespace: String?, name: String? = nil, subresource: String? = nil) -> String {
        var path = basePath
        if let namespace { path += "/namespaces/\(namespace)" }
        path += "/\(plural)"
        if let name { path += "/\(name)" }
        if let subresource { path += "/\(subresource)" }
        return path
    }
}

/// What went wrong talking to the API server, worded for an operator.
public enum KubeError: Error, CustomStringConvertible, Sendable {
    case configuration(String)
    case transport(String)
    /// A `Status` answer: code, reason, message.
    case status(code: Int, reason: String, message: String, request: String)

    public var description: String {
        switch self {
        case .configuration(let message): return "Kubernetes configuration: \(message)"
        case .transport(let message): return "Kubernetes API unreachable: \(message)"
        case .status(let code, let reason, let message, let request):
            let hint: String
            switch code {
            case 401: hint = " (the API server rejected our credentials: check the service account token or kubeconfig user)"
            case 403: hint = " (RBAC: the agent's ServiceAccount lacks this permission; see deploy/)"
            case 404 where message.contains("page not found") || message.contains("could not find the requested resource"):
                hint = " (the CRD is not installed: ExternalArtifact needs Flux 2.7 or later)"
            default: hint = ""
            }
            return "\(request): \(code) \(reason): \(message)\(hint)"
        }
    }

    public var code: Int? { if case .status(let code, _, _, _) = self { code } else { nil } }
}

/// A small Kubernetes API client: server-side apply (main resource and status subresource),
/// JSON merge patch, and paginated list. Built on AsyncHTTPClient; TLS trusts the cluster CA.
///
/// Retries: 409 Conflict, 429 and 5xx are retried (bounded, with backoff); 401 re-reads a
/// token file once (projected tokens rotate); 410 Gone on a paginated list restarts the list.
public final class KubeClient: Sendable {
    public let connection: KubeConnection
    let http: HTTPClient
    /// Watches stay open for minutes: their own client, without the idle read timeout.
    let watchHTTP: HTTPClient
    let logger: Logger
    let maxAttempts: Int

    public init(connection: KubeConnection, logger: Logger, maxAttempts: Int = 4) throws(KubeError) {
        self.connection = connection
        self.logger = logger
        self.maxAttempts = maxAttempts
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            if let ca = connection.certificateAuthority {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(ca))
            }
            if case .clientCertificate(let certificate, let key) = connection.credentials {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: key, format: .pem))
            }
        } catch {
            throw .configuration("\(connection.origin): unusable certificate or key (\(error))")
        }
        if connection.insecureSkipTLSVerify { tls.certificateVerification = .none }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(30))
        configuration.redirectConfiguration = .disallow
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        var watchConfiguration = configuration
        watchConfiguration.timeout = .init(connect: .seconds(5), read: .seconds(600))
        watchHTTP = HTTPClient(eventLoopGroupProvider: .singleton, configuration: watchConfiguration)
    }

    public func shutdown() async {
        try? await http.shutdown()
        try? await watchHTTP.shutdown()
    }

    public static let fieldManager = "relay-agent"

    /// Server-side apply of `object` (fieldManager relay-agent, force): creates or updates.
    /// With `subresource: "status"` only the status is written. Returns the stored object.
    public func apply<Object: Encodable>(_ object: Object, resource: KubeResource, namespace: String, name: String,
                                         subresource: String? = nil) async throws(KubeError) -> Data {
        let body = try encode(object)
        return try await send(.PATCH, resource.path(namespace: namespace, name: name, subresource: subresource),
                              query: ["fieldManager": Self.fieldManager, "force": "true"],
                              contentType: "application/apply-patch+yaml", body: body).body
    }

    /// RFC 7386 merge patch of the main resource.
    public func mergePatch<Patch: Encodable>(_ patch: Patch, resource: KubeResource, namespace: String, name: String) async throws(KubeError) -> Data {
        try await send(.PATCH, resource.path(namespace: namespace, name: name), query: ["fieldManager": Self.fieldManager],
                       contentType: "application/merge-patch+json", body: try encode(patch)).body
    }

    /// Every object of a type, in one namespace or all, following `continue` pages; a 410
    /// (the continue token expired) starts the list again.
    public func list<Item: Decodable & Sendable>(_ resource: KubeResource, namespace: String?, as: Item.Type,
                                                 pageSize: Int = 250) async throws(KubeError) -> [Item] {
        try await listWithVersion(resource, namespace: namespace, as: Item.self, pageSize: pageSize).items
    }

    /// `list`, with the collection's resourceVersion: every page of one list is served from
    /// one snapshot, so the first page's version is where a watch must start.
    public func listWithVersion<Item: Decodable & Sendable>(_ resource: KubeResource, namespace: String?, as: Item.Type,
                                                            pageSize: Int = 250) async throws(KubeError) -> (items: [Item], resourceVersion: String) {
        var restarts = 0
        while true {
            var items: [Item] = []
            var token: String?
            var version: String?
            do {
                repeat {
                    var query = ["limit": String(pageSize)]
                    if let token { query["continue"] = token }
                    let answer = try await send(.GET, resource.path(namespace: namespace), query: query, contentType: nil, body: nil)
                    let page: KubeList<Item>
                    do { page = try JSONDecoder().decode(KubeList<Item>.self, from: answer.body) } catch {
                        throw KubeError.transport("unexpected list answer for \(resource.plural): \(error)")
                    }
                    items += page.items
                    version = version ?? page.metadata?.resourceVersion
                    token = page.metadata?.continue.flatMap { $0.isEmpty ? nil : $0 }
                } while token != nil
                return (items, version ?? "")
            } catch let error as KubeError where error.code == 410 && restarts < 3 {
                restarts += 1
                logger.info("list continue token expired; listing again", metadata: ["resource": "\(resource.plural)"])
            } catch let error as KubeError {
                throw error
            } catch {
                throw .transport("\(error)")
            }
        }
    }

    struct Answer { var status: Int; var body: Data }

    private func encode<Object: Encodable>(_ object: Object) throws(KubeError) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do { return try encoder.encode(object) } catch { throw .transport("cannot encode request: \(error)") }
    }

    func send(_ method: HTTPMethod, _ path: String, query: [String: String], contentType: String?, body: Data?) async throws(KubeError) -> Answer {
        var components = URLComponents()
        components.queryItems = query.keys.sorted().map { URLQueryItem(name: $0, value: query[$0]) }
        let url = connection.server + path + (query.isEmpty ? "" : "?" + (components.percentEncodedQuery ?? ""))
        let description = "\(method.rawValue) \(path)"
        var rereadToken = false
        var attempt = 0
        while true {
            attempt += 1
            var request = HTTPClientRequest(url: url)
            request.method = method
            request.headers.add(name: "Accept", value: "application/json")
            request.headers.add(name: "User-Agent", value: "relay-agent")
            if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
            if let token = try currentToken() { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
            let status: Int
            let data: Data
            var retryAfter: Double?
            do {
                let response = try await http.execute(request, timeout: .seconds(30))
                status = Int(response.status.code)
                retryAfter = response.headers.first(name: "Retry-After").flatMap(Double.init)
                data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
            } catch {
                if attempt < maxAttempts {
                    try await pause(attempt: attempt, retryAfter: nil)
                    continue
                }
                throw .transport("\(description) to \(connection.server): \(error)")
            }
            if (200..<300).contains(status) { return Answer(status: status, body: data) }
            let failure = Self.statusError(status: status, body: data, request: description)
            if status == 401, !rereadToken, case .tokenFile = connection.credentials {
                rereadToken = true  // a projected token may have rotated under us: read it again once
                continue
            }
            guard [409, 429, 500, 502, 503, 504].contains(status), attempt < maxAttempts else { throw failure }
            logger.debug("Kubernetes API answered \(status); retrying", metadata: ["request": "\(description)"])
            try await pause(attempt: attempt, retryAfter: retryAfter)
        }
    }

    func currentToken() throws(KubeError) -> String? {
        switch connection.credentials {
        case .token(let token): return token
        case .tokenFile(let path):
            guard let data = FileManager.default.contents(atPath: path) else { throw .configuration("cannot read token file \(path)") }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        case .clientCertificate, .none: return nil
        }
    }

    private func pause(attempt: Int, retryAfter: Double?) async throws(KubeError) {
        let seconds = min(retryAfter ?? 0.2 * Double(1 << (attempt - 1)), 5)
        do { try await Task.sleep(for: .milliseconds(Int(seconds * 1000 * Double.random(in: 0.8...1.2)))) } catch {
            throw .transport("cancelled")
        }
    }

    static func statusError(status: Int, body: Data, request: String) -> KubeError {
        struct Status: Decodable { var reason: String?; var message: String? }
        let decoded = try? JSONDecoder().decode(Status.self, from: body)
        let fallback = String(decoding: body.prefix(300), as: UTF8.self)
        return .status(code: status, reason: decoded?.reason ?? HTTPResponseStatus(statusCode: status).reasonPhrase,
                       message: decoded?.message ?? fallback, request: request)
    }
}

struct KubeList<Item: Decodable>: Decodable {
    struct Metadata: Decodable { var `continue`: String?; var resourceVersion: String? }
    var metadata: Metadata?
    var items: [Item]
}

/// `metadata` as the agent reads it.
public struct KubeObjectMeta: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String?
    public var generation: Int64?
    public var resourceVersion: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?

    public init(name: String, namespace: String?, labels: [String: String]? = nil, annotations: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
    }
}
