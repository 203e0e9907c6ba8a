import ArtifactMirror
import RelayShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import HummingbirdCore
import HummingbirdTLS
import ServiceLifecycle

/// The agent's Flux-facing HTTP endpoint (`listen`):
/// - a read-only OCI distribution registry for `OCIRepository` (spec §4.4), one repository
///   per source;
/// - plain artifact URLs `/artifacts/sha256/<hex>.tar.gz` for `ExternalArtifact` (spec §3.4):
///   exact bytes, `Content-Length`, no `Content-Encoding`, immutable per digest;
/// - `/healthz` and `/readyz`.
/// Everything served comes from the store, which holds only verified artifacts.
public struct FluxEndpoint: Sendable {
    public struct Options: Sendable {
        public var oci: Bool
        public var artifacts: Bool
        public var pullAuth: PullAuth?
        /// Largest `n` a tags list accepts.
        public var maxTagsPage: Int
        /// notification-controller events (`POST /flux/events`), when set.
        public var events: FluxEventReceiver?
        /// Serve HTTPS with this PEM certificate chain and key (OCIRepository `certSecretRef`).
        public var tls: (certificateFile: String, keyFile: String)?
        /// TLS 1.3 only unless lowered to 1.2 (then ECDHE + AEAD suites only).
        public var tlsMinimumVersion: TLSMinimumVersion = .tls13
        /// Where a stored file found not to match its digest while served goes (moved out of
        /// the store, fetched again); without it such a file is only refused.
        public var quarantine: ArtifactQuarantine?

        public init(oci: Bool = true, artifacts: Bool = true, pullAuth: PullAuth? = nil, maxTagsPage: Int = 10_000) {
            self.oci = oci
            self.artifacts = artifacts
            self.pullAuth = pullAuth
            self.maxTagsPage = maxTagsPage
        }
    }

    let catalog: CatalogHolder
    let options: Options
    let logger: Logger

    public init(catalog: CatalogHolder, options: Options, logger: Logger) {
        self.catalog = catalog
        self.options = options
        self.logger = logger
    }

    /// The HTTP application, ready to run as a service, with `limits` on its connections and,
    /// with `authFailures`, failed pull credentials and event signatures limited per client
    /// address. `onListening` gets the bound port.
    public func application(host: String, port: Int, limits: HTTPLimits = .agentDefaults, authFailures: AuthFailureLimiter? = nil,
                            onListening: @escaping @Sendable (Int) async -> Void = { _ in })
        throws -> some ApplicationProtocol & Service
    {
        let router = Router(context: PeerRequestContext.self)
        if let authFailures {  // first: it guards the routes added after it
            router.add(middleware: AuthThrottleMiddleware(limiter: authFailures, surface: Self.credentialSurface, refusal: Self.throttled))
        }
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: Observability.exposition())))
        }
        router.get("/readyz") { _, _ -> Response in
            catalog.isLoaded ? Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
                : Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "store not read yet\n")))
        }
        for method in [HTTPRequest.Method.get, .head] {
            router.on("/v2", method: method) { request, context in try await respondOCI(request, context: context) }
            router.on("/v2/**", method: method) { request, context in try await respondOCI(request, context: context) }
            router.on("/artifacts/**", method: method) { request, context in try await respondArtifact(request, context: context) }
        }
        if let events = options.events {
            router.post("/flux/events") { request, _ in await events.respond(request) }
        }
        for method in [HTTPRequest.Method.post, .put, .patch, .delete] {
            router.on("/v2/**", method: method) { request, _ in
                OCIError(status: .methodNotAllowed, code: .unsupported, message: "this registry is read-only")
                    .response(head: false)
            }
        }
        let logger = self.logger
        var tlsConfiguration: TLSConfiguration?
        if let tls = options.tls {
            let chain: [NIOSSLCertificate]
            do { chain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile) } catch {
                throw FluxEndpointError.tls("cannot read the certificate \(tls.certificateFile): \(error)")
            }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .file(tls.keyFile))
            options.tlsMinimumVersion.apply(to: &configuration)
            tlsConfiguration = configuration
        }
        return Application(
            router: router,
            server: .limited(limits, metricsPrefix: "relay_agent", tls: tlsConfiguration),
            configuration: .init(address: .hostname(host, port: port), serverName: "relay-agent"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                logger.info("flux endpoint listening", metadata: ["address": "\(host):\(bound)"])
                await onListening(bound)
            },
            logger: logger)
    }

    // MARK: - OCI

    func respondOCI(_ request: Request, context: some RequestContext) async throws -> Response {
        let head = request.method == .head
        guard options.oci else { return OCIError(status: .notFound, code: .unsupported, message: "the OCI endpoint is turned off").response(head: head) }
        let route = OCIRoute.parse(request.uri.path)
        if route == .token { return tokenResponse(request) }
        if let auth = options.pullAuth, !auth.permits(request.head) {
            var error = OCIError(status: .unauthorized, code: .unauthorized, message: "authentication required")
            error.headers[.wwwAuthenticate] = auth.challenge(host: request.head.authority)
            return error.response(head: head)
        }
        do {
            switch route {
            case .base:
                return json(Data("{}".utf8), head: head)
            case .manifest(let name, let reference):
                return try manifest(name: name, reference: reference, head: head)
            case .blob(let name, let digest):
                return try await blob(name: name, digest: digest, head: head, context: context)
            case .tags(let name):
                return try tags(name: name, request: request, head: head)
            case .referrers(let name, _):
                // No referrers API: 404 sends cosign and Flux to the `sha256-<hex>.sig` tag.
                _ = try repository(name)
                return OCIError(status: .notFound, code: .unsupported,
                                message: "the referrers API is not served here; signatures are under the tag sha256-<hex>.sig")
                    .response(head: head)
            case .token, .notFound:
                return OCIError(status: .notFound, code: .unsupported, message: "no such endpoint").response(head: head)
            }
        } catch let error as OCIError {
            return error.response(head: head)
        }
    }

    private func repository(_ name: String) throws(OCIError) -> FluxCatalog.Repository {
        guard OCINames.isRepository(name) else { throw .nameInvalid(name) }
        guard let repository = catalog.catalog.repositories[name] else { throw .nameUnknown(name) }
        return repository
    }

    private func manifest(name: String, reference: String, head: Bool) throws(OCIError) -> Response {
        let repository = try repository(name)
        let digest: String
        if reference.hasPrefix("sha256:") || reference.contains(":") {
            guard OCINames.isSHA256Digest(reference) else {
                throw OCIError(status: .badRequest, code: .digestInvalid, message: "invalid digest: expected sha256:<64 lowercase hex>",
                               detail: ["digest": String(reference.prefix(200))])
            }
            digest = reference
        } else {
            guard OCINames.isTag(reference) else {
                throw OCIError(status: .badRequest, code: .tagInvalid, message: "invalid tag", detail: ["tag": String(reference.prefix(200))])
            }
            guard let tagged = repository.tags[reference] else {
                throw OCIError(status: .notFound, code: .manifestUnknown, message: "manifest unknown", detail: ["tag": reference])
            }
            digest = tagged
        }
        // An artifact's manifest, or the relay's cosign signature of one (`sha256-<hex>.sig`).
        guard let bytes = repository.manifests[digest]?.bytes ?? repository.signatureManifests[digest] else {
            throw OCIError(status: .notFound, code: .manifestUnknown, message: "manifest unknown", detail: ["digest": digest])
        }
        var headers = HTTPFields()
        headers[.contentType] = repository.manifests[digest]?.mediaType ?? OCIManifest.manifestMediaType
        headers[.contentLength] = String(bytes.count)
        headers[FluxHeaders.contentDigest] = digest
        headers[.eTag] = "\"\(digest)\""
        headers[FluxHeaders.apiVersion] = "registry/2.0"
        return Response(status: .ok, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    private func blob(name: String, digest: String, head: Bool, context: some RequestContext) async throws -> Response {
        let repository = try repository(name)
        guard OCINames.isSHA256Digest(digest) else {
            throw OCIError(status: .badRequest, code: .digestInvalid, message: "invalid digest: expected sha256:<64 lowercase hex>",
                           detail: ["digest": String(digest.prefix(200))])
        }
        if digest == OCIManifest.configDigest {
            var headers = blobHeaders(digest: digest, size: UInt64(OCIManifest.configBytes.count))
            headers[.contentType] = OCIManifest.configMediaType
            return Response(status: .ok, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: OCIManifest.configBytes)))
        }
        if let small = repository.signatureBlobs[digest] ?? repository.payloadBlobs[digest] {
            var headers = blobHeaders(digest: digest, size: UInt64(small.count))
            headers[.contentType] = "application/octet-stream"
            return Response(status: .ok, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: small)))
        }
        guard let size = repository.layers[digest] else {
            throw OCIError(status: .notFound, code: .blobUnknown, message: "blob unknown to registry", detail: ["digest": digest])
        }
        return try await file(digest: digest, size: size, head: head, contentType: "application/octet-stream", context: context) {
            OCIError(status: .notFound, code: .blobUnknown, message: "blob unknown to registry", detail: ["digest": digest])
        }
    }

    private func tags(name: String, request: Request, head: Bool) throws(OCIError) -> Response {
        let repository = try repository(name)
        var tags = repository.tags.keys.sorted()
        let query = request.uri.queryParameters
        if let last = query["last"] { tags = tags.filter { $0 > String(last) } }
        var next: String?
        if let text = query["n"] {
            guard let n = Int(text), n >= 0, n <= options.maxTagsPage else {
                throw OCIError(status: .badRequest, code: .paginationNumberInvalid,
                               message: "n must be a whole number from 0 to \(options.maxTagsPage)", detail: ["n": String(text.prefix(40))])
            }
            if tags.count > n {
                tags = Array(tags.prefix(n))
                if let lastTag = tags.last { next = "</v2/\(name)/tags/list?n=\(n)&last=\(lastTag)>; rel=\"next\"" }
            }
        }
        let data = (try? JSONSerialization.data(withJSONObject: ["name": name, "tags": tags], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        var response = json(data, head: head)
        if let next { response.headers[FluxHeaders.link] = next }
        return response
    }

    private func tokenResponse(_ request: Request) -> Response {
        guard let auth = options.pullAuth, auth.mode == .bearer else {
            return OCIError(status: .notFound, code: .unsupported, message: "no token service: pull authentication is not bearer").response(head: false)
        }
        guard let (token, expiresIn) = auth.issueToken(for: request.head) else {
            var error = OCIError(status: .unauthorized, code: .unauthorized, message: "wrong or missing credentials")
            error.headers[.wwwAuthenticate] = #"Basic realm="relay-agent""#
            return error.response(head: false)
        }
        let body: [String: any Sendable] = ["token": token, "access_token": token, "expires_in": expiresIn,
                                            "issued_at": OCIManifest.timestamp(Date())]
        return json((try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data(), head: false)
    }

    // MARK: - Plain artifact URLs

    func respondArtifact(_ request: Request, context: some RequestContext) async throws -> Response {
        let head = request.method == .head
        let notFound = Response(status: .notFound, headers: [.contentType: "text/plain; charset=utf-8"],
                                body: head ? .init() : .init(byteBuffer: ByteBuffer(string: "artifact not found\n")))
        guard options.artifacts else { return notFound }
        // Exactly /artifacts/sha256/<64 lowercase hex>.tar.gz; anything else is unknown.
        let path = request.uri.path
        let prefix = "/artifacts/sha256/", suffix = ".tar.gz"
        guard path.hasPrefix(prefix), path.hasSuffix(suffix), path.count == prefix.count + 64 + suffix.count else { return notFound }
        let digest = "sha256:" + path.dropFirst(prefix.count).dropLast(suffix.count)
        guard OCINames.isSHA256Digest(digest), let size = catalog.catalog.artifacts[digest] else { return notFound }
        do {
            var response = try await file(digest: digest, size: size, head: head, contentType: "application/gzip", context: context) {
                OCIError(status: .notFound, code: .blobUnknown, message: "artifact not found")
            }
            response.headers[.cacheControl] = "public, max-age=31536000, immutable"
            return response
        } catch is OCIError {
            return notFound
        }
    }

    // MARK: - Helpers

    private func blobHeaders(digest: String, size: UInt64) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentLength] = String(size)
        headers[FluxHeaders.contentDigest] = digest
        headers[.eTag] = "\"\(digest)\""
        headers[FluxHeaders.apiVersion] = "registry/2.0"
        return headers
    }

    /// A stored artifact's bytes. The file must have exactly the recorded size; anything
    /// else (deleted by retention a moment ago, damaged) is reported as missing, never served.
    /// The bytes are hashed as they go out (`VerifiedFileStream`): a file changed at rest is
    /// cut off before its last chunk and quarantined.
    private func file(digest: String, size: UInt64, head: Bool, contentType: String, context: some RequestContext,
                      missing: () -> OCIError) async throws -> Response {
        let path = catalog.path(forDigest: digest)
        let actual = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value
        guard actual == size else {
            if actual != nil {
                logger.error("stored artifact has the wrong size; not serving it", metadata: ["digest": "\(digest)", "expected": "\(size)", "actual": "\(actual!)"])
            }
            throw missing()
        }
        var headers = blobHeaders(digest: digest, size: size)
        headers[.contentType] = contentType
        if head { return Response(status: .ok, headers: headers, body: .init()) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw missing() }
        let body = VerifiedFileStream(fd: fd, size: size, digest: digest).body { actual, file in
            await self.quarantine(digest: digest, actual: actual, file: file)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    /// A served file hashed to `actual`: out of the store with it, and a catalog without it.
    private func quarantine(digest: String, actual: String, file: VerifiedFileStream.FileIdentity) async {
        let moved = try? await NIOThreadPool.singleton.runIfActive { [options, catalog] in
            guard let quarantine = options.quarantine, quarantine.quarantine(digest: digest, actual: actual, file: file) else { return false }
            try? catalog.reload()
            return true
        }
        if moved != true {
            logger.error("stored artifact does not match its digest; download cut short",
                         metadata: ["digest": "\(digest)", "actual": "\(actual)"])
        }
    }

    private func json(_ data: Data, head: Bool) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.contentLength] = String(data.count)
        headers[FluxHeaders.apiVersion] = "registry/2.0"
        return Response(status: .ok, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

public enum FluxEndpointError: Error, CustomStringConvertible {
    case tls(String)
    public var description: String { if case .tls(let message) = self { "Flux endpoint TLS: \(message)" } else { "" } }
}
