import ArtifactMirror
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOPosix
import Synchronization
import RelayShared

/// Rollouts, pipeline gates and diffs on the relay's `http` address. Reads need a reader (or
/// admin) token, a release an admin token (`admins:` in relay.yaml).
///
/// - `GET /api/v1/rollouts`: every governed source's rollout (what the page shows).
/// - `GET /api/v1/sources/{source}/rollout`: waves, each agent's state, holds (why, until when).
/// - `GET /api/v1/sources/{source}/health?revision=R&agents=GLOB`: per targeted agent, what Flux
///   says of revision R (a revision string, a commit SHA or its prefix, or a digest), and
///   whether all are healthy (`done`) or any failed (`failed`): what `relay-server wait` polls.
/// - `POST /api/v1/sources/{source}/release` `{"agent": A, "reason": "…"}`: push the newest
///   revision to A through a freeze; recorded with the admin's name.
/// - `GET /api/v1/sources/{source}/diff?from=R1&to=R2`: what changes between the files two
///   revisions deliver, as a unified diff (`text/x-diff`).
struct RolloutAPI: Sendable {
    let registry: Registry
    let rollouts: RolloutController
    let store: ArtifactStore
    let readers: [ResolvedServerConfig.Reader]
    let admins: [ResolvedServerConfig.Reader]
    let sources: [String]
    let logger: Logger

    func add(to router: Router<PeerRequestContext>) {
        router.get("api/v1/rollouts") { request, _ in
            try await authorized(request, admin: false) { _ in
                var views: [RolloutView] = []
                for source in sources { if let view = await rollouts.view(source: source) { views.append(view) } }
                return try json(views)
            }
        }
        let api = router.group("api/v1/sources")
        api.get(":source/rollout") { request, context in
            try await authorized(request, admin: false) { _ in
                let source = try known(context)
                guard let view = await rollouts.view(source: source) else {
                    return error(.notFound, "source '\(source)' has no rollout rules (rollout: or freezes:) or nothing packaged yet")
                }
                return try json(view)
            }
        }
        api.get(":source/health") { request, context in
            try await authorized(request, admin: false) { _ in try await health(source: try known(context), request: request) }
        }
        api.post(":source/release") { request, context in
            try await authorized(request, admin: true) { admin in
                try await release(source: try known(context), request: request, admin: admin)
            }
        }
        api.get(":source/diff") { request, context in
            try await authorized(request, admin: false) { _ in try await diff(source: try known(context), request: request) }
        }
    }

    private func known(_ context: PeerRequestContext) throws -> String {
        let source = try context.parameters.require("source")
        guard sources.contains(source) else { throw HTTPError(.notFound, message: "no source named '\(source)'") }
        return source
    }

    // MARK: - Health (pipeline gates)

    struct Health: Codable, Sendable {
        struct Agent: Codable, Sendable {
            var agent: String
            /// healthy | failed | progressing | delivered | held | pending
            var state: String
            var message: String
            var hold: RolloutHold?
            var objects: [FluxObjectState]
        }
        var source: String
        var revision: String
        var digest: String
        var done: Bool
        var failed: Bool
        var agents: [Agent]
    }

    func health(source: String, request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        guard let wanted = query["revision"].map(String.init), !wanted.isEmpty else {
            throw HTTPError(.badRequest, message: "revision is required: a revision string, a commit SHA (or 7+ hex prefix) or a digest")
        }
        let artifact = try await resolve(wanted, source: source)
        var agents = try await registry.grantedAgents(source: source)
        if let glob = query["agents"].map(String.init), !glob.isEmpty {
            let patterns = glob.split(separator: ",").map(String.init)
            agents = agents.filter { AgentPattern.matches(patterns, $0) }
        }
        let deliveries = try await registry.deliveries(source: source, digests: [artifact.digest])
        let objects = try await registry.fluxObjects(source: source)
        let view = await rollouts.view(source: source)
        let perAgent = agents.map { agent -> Health.Agent in
            let mine = objects.filter { $0.agent == agent }
            let (health, message) = RevisionHealth.of(artifact.revision, objects: mine)
            let hold = view?.digest == artifact.digest ? view?.agents.first { $0.agent == agent }?.hold : nil
            let state: String
            switch health {
            case .healthy, .failed, .progressing: state = health.rawValue
            case .unknown:
                if let hold, hold.kind != .wave || !deliveries.contains(where: { $0.agent == agent }) {
                    state = "held"
                } else {
                    state = deliveries.contains { $0.agent == agent } ? "delivered" : "pending"
                }
            }
            return .init(agent: agent, state: state, message: message.isEmpty ? hold?.reason ?? "" : message, hold: hold,
                         objects: mine.filter { $0.revisionApplied == artifact.revision || $0.revisionAttempted == artifact.revision })
        }
        return try json(Health(source: source, revision: artifact.revision, digest: artifact.digest,
                               done: !perAgent.isEmpty && perAgent.allSatisfy { $0.state == "healthy" },
                               failed: perAgent.contains { $0.state == "failed" }, agents: perAgent))
    }

    func resolve(_ name: String, source: String) async throws -> PackagedArtifact {
        guard let found = try await registry.findRevision(name, source: source) else {
            throw HTTPError(.notFound, message: "source '\(source)' has no packaged revision '\(name)' (not packaged yet, or older than the newest 1000)")
        }
        return found
    }

    // MARK: - Release

    struct ReleaseRequest: Decodable {
        var agent: String
        var reason: String
        /// The revision the admin means (revision string, commit or prefix, digest): refused
        /// with 409 when the newest is another one by now.
        var revision: String?
    }

    func release(source: String, request: Request, admin: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 << 10)
        guard let parsed = try? JSONDecoder().decode(ReleaseRequest.self, from: Data(body.readableBytesView)) else {
            throw HTTPError(.badRequest, message: #"expected {"agent": "<name>", "reason": "<why>"}"#)
        }
        let release = try await RolloutReleases.release(source: source, agent: parsed.agent, reason: parsed.reason, by: admin,
                                                        expected: parsed.revision, registry: registry)
        rollouts.poke()
        logger.notice("revision released through a freeze", metadata: [
            "source": "\(source)", "agent": "\(release.agent)", "revision": "\(release.revision)", "by": "\(admin)", "reason": "\(release.reason)"])
        return try json(release)
    }

    // MARK: - Diff

    func diff(source: String, request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        guard let from = query["from"].map(String.init), let to = query["to"].map(String.init) else {
            throw HTTPError(.badRequest, message: "from and to are required (revision strings, commit SHAs or digests)")
        }
        let old = try await resolve(from, source: source), new = try await resolve(to, source: source)
        // Unpacking two artifacts is CPU and memory: two at a time, on NIO's blocking pool.
        guard Self.diffsRunning.withLock({ running in
            guard running < Self.maxDiffs else { return false }
            running += 1
            return true
        }) else {
            throw HTTPError(.tooManyRequests, message: "\(Self.maxDiffs) diffs are being computed; ask again shortly")
        }
        defer { Self.diffsRunning.withLock { $0 -= 1 } }
        let store = store
        let text = try await NIOThreadPool.singleton.runIfActive { try RevisionDiff.unified(old: old, new: new, store: store) }
        guard text.utf8.count <= Self.maxDiffBytes else {
            throw HTTPError(.contentTooLarge, message: "the diff is larger than \(Self.maxDiffBytes >> 20) MiB; compare with relay-server diff --config on the relay")
        }
        return Response(status: .ok, headers: [.contentType: "text/x-diff; charset=utf-8", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static let maxDiffs = 2
    static let maxDiffBytes = 32 << 20
    static let diffsRunning = Mutex(0)

    // MARK: - Helpers

    /// Runs `body` with the caller's name if its token is a reader's (or an admin's; only an
    /// admin's when `admin`).
    private func authorized(_ request: Request, admin: Bool, _ body: (String) async throws -> Response) async throws -> Response {
        guard let token = StatusAPI.token(in: request) else {
            return error(.unauthorized, "a\(admin ? "n admin" : " reader") token is required (Authorization: Bearer <token>)",
                         headers: [.wwwAuthenticate: #"Bearer realm="relay""#])
        }
        let hash = TokenHash.sha256Hex(token)
        var name: String?
        var isAdmin = false
        for entry in admins where TokenHash.constantTimeEqual(hash, entry.tokenSHA256) { name = entry.name; isAdmin = true }
        for entry in readers where TokenHash.constantTimeEqual(hash, entry.tokenSHA256) { name = name ?? entry.name }
        guard let name else {
            return error(.unauthorized, "this token is not a reader or admin token", headers: [.wwwAuthenticate: #"Bearer realm="relay", error="invalid_token""#])
        }
        if admin, request.headers[.authorization] == nil {
            return error(.unauthorized, "send the admin token in the Authorization header (a token in a URL ends up in logs)")
        }
        guard !admin || isAdmin else {
            return error(.forbidden, "releasing a held revision needs an admin token (admins: in relay.yaml); '\(name)' is a reader")
        }
        return try await body(name)
    }

    private func json<T: Encodable>(_ value: T) throws -> Response { try APIResponse.json(value) }

    private func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        APIResponse.error(status, message, headers: headers)
    }
}

/// Releases of a held revision, from the API or `relay-server release`.
public enum RolloutReleases {
    /// Records that `agent` gets `source`'s newest revision through any freeze.
    public static func release(source: String, agent: String, reason: String, by: String, expected: String? = nil,
                               registry: Registry) async throws -> RolloutRelease {
        let reason = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !reason.isEmpty else { throw HTTPError(.badRequest, message: "a reason is required: it is recorded with the release") }
        guard try await registry.grantedAgents(source: source).contains(agent) else {
            throw HTTPError(.notFound, message: "agent '\(agent)' is not granted source '\(source)'")
        }
        guard let latest = try await registry.latestArtifacts()[source] else {
            throw HTTPError(.conflict, message: "source '\(source)' has no packaged revision yet")
        }
        if let expected, try await registry.findRevision(expected, source: source)?.digest != latest.digest {
            throw HTTPError(.conflict, message: "the newest revision of '\(source)' is \(latest.revision), not '\(expected)': nothing released")
        }
        let release = RolloutRelease(source: source, agent: agent, digest: latest.digest, revision: latest.revision,
                                     by: by, reason: String(reason.prefix(500)), at: Date())
        try await registry.recordRelease(release)
        RelayMetrics.rolloutReleases.increment()
        return release
    }
}

/// The unified diff between what two revisions of a source deliver.
public enum RevisionDiff {
    public static func unified(old: PackagedArtifact, new: PackagedArtifact, store: ArtifactStore) throws -> String {
        func files(_ artifact: PackagedArtifact) throws -> [String: Data] {
            let path = store.path(forDigest: artifact.digest).path
            guard FileManager.default.fileExists(atPath: path) else {
                throw HTTPError(.gone, message: "\(artifact.revision) is no longer in the relay's store (only the newest revisions are kept)")
            }
            do { return try ArtifactFiles.read(path: path) } catch { throw HTTPError(.internalServerError, message: "\(error)") }
        }
        // Empty labels: `diff --git a/<path> b/<path>`, as `git diff <commit> <commit>` prints it.
        return TreeDiff.unified(old: try files(old), new: try files(new), oldLabel: "", newLabel: "", blobID: gitBlobID)
    }

    /// Git's blob id of `data` (SHA-1 of `blob <size>\0` and the bytes), as `index` lines show it.
    static func gitBlobID(_ data: Data) -> String {
        var hasher = Insecure.SHA1()
        hasher.update(data: Data("blob \(data.count)\u{0}".utf8))
        hasher.update(data: data)
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
