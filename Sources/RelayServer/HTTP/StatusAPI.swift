import Foundation
import HTTPTypes
import Hummingbird
import Logging
import RelayShared
import ServiceLifecycle

/// The status feed's HTTP side, on the relay's `http` address. Every route needs a reader
/// token (`readers:` in relay.yaml, stored hashed): `Authorization: Bearer <token>`, Basic
/// with the token as password, or `access_token=<token>` in the query (for EventSource and
/// the page, which cannot set headers).
///
/// - `GET /api/v1/agents`: agents, connected or not, last heard, version, granted sources;
///   `offline` (last bundle exported, last status bundle imported, newest status) and
///   `newestStatusAgeSeconds` when the agent has any.
/// - `GET /api/v1/agents/{agent}/objects`: the Flux objects the agent reported, latest state.
/// - `GET /api/v1/sources/{source}/revisions?limit=&before=`: revisions, newest first, with, per
///   agent, delivered / applied / healthy; paged (`Link: rel="next"`).
/// - `GET /api/v1/overview`: clusters × sources (what the page shows).
/// - `GET /api/v1/timeline?since=&agent=&source=&limit=`: stored entries after a feed id, at
///   most 1000 a request (default 100); `next` and `more` page on.
/// - `GET /api/v1/stream?since=&agent=&source=`: the same as server-sent events, live.
/// - `GET /`: the status page.
struct StatusAPI: Sendable {
    let registry: Registry
    let feed: StatusFeed
    let readers: [ResolvedServerConfig.Reader]
    let sources: [String]
    let logger: Logger
    /// Comment lines keep idle streams open through proxies.
    var keepAlive: Duration = .seconds(15)

    func add(to router: Router<PeerRequestContext>) {
        let api = router.group("api/v1")
        api.get("agents") { request, _ in try await authorized(request) { try json(await registry.agentSummaries()) } }
        api.get("agents/:agent/objects") { request, context in
            try await authorized(request) {
                let agent = try context.parameters.require("agent")
                guard try await registry.agentSummaries().contains(where: { $0.name == agent }) else {
                    return error(.notFound, "no agent named '\(agent)'")
                }
                return try json(await registry.fluxObjects(agent: agent))
            }
        }
        api.get("sources/:source/revisions") { request, context in
            try await authorized(request) {
                let source = try context.parameters.require("source")
                guard sources.contains(source) else { return error(.notFound, "no source named '\(source)'") }
                return try await revisions(source: source, request: request)
            }
        }
        api.get("overview") { request, _ in
            try await authorized(request) { try json(await StatusOverview.build(registry: registry, sources: sources)) }
        }
        api.get("timeline") { request, _ in
            try await authorized(request) { try timeline(request) }
        }
        api.get("stream") { request, _ in
            try await authorized(request) { try stream(request) }
        }
        router.get("/") { request, _ in
            try await authorized(request) {
                Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                         body: .init(byteBuffer: ByteBuffer(string: StatusPage.html)))
            }
        }
    }

    struct RevisionStatus: Codable {
        struct PerAgent: Codable {
            var agent: String
            var delivered: Bool
            var deliveredAt: Date?
            var applied: Bool
            var healthy: Bool
            var objects: [FluxObjectState]
        }
        var revision: String
        var digest: String
        var commit: String
        var createdAt: Date
        var agents: [PerAgent]
    }

    /// Revisions of `source`, newest first, `limit` (default 100, at most 1000) at a time; when
    /// more exist, `Link: <…?limit=N&before=T>; rel="next"` names the next page.
    func revisions(source: String, request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = try Self.limit(query["limit"].map(String.init))
        var before: Int64?
        if let text = query["before"] {
            guard let value = Int64(text), value > 0 else { throw HTTPError(.badRequest, message: "before must be the `before` of a `next` link") }
            before = value
        }
        let page = try await registry.revisions(source: source, limit: limit + 1, before: before)
        let artifacts = Array(page.prefix(limit))
        let deliveries = try await registry.deliveries(source: source, digests: artifacts.map(\.digest))
        let objects = try await registry.fluxObjects(source: source)
        let agents = try await registry.agentSummaries().filter { $0.sources.contains(source) }.map(\.name)
        let statuses = artifacts.map { artifact in
            RevisionStatus(revision: artifact.revision, digest: artifact.digest, commit: artifact.commit, createdAt: artifact.createdAt,
                           agents: agents.map { agent in
                               let delivery = deliveries.first { $0.agent == agent && $0.digest == artifact.digest }
                               let applied = objects.filter { $0.agent == agent && $0.revisionApplied == artifact.revision }
                               return .init(agent: agent, delivered: delivery != nil, deliveredAt: delivery?.deliveredAt,
                                            applied: !applied.isEmpty, healthy: !applied.isEmpty && applied.allSatisfy { $0.state == "ready" },
                                            objects: applied)
                           })
        }
        var response = try json(statuses)
        if page.count > limit, let last = artifacts.last {
            let encoded = source.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? source
            response.headers[HTTPField.Name("Link")!] = "</api/v1/sources/\(encoded)/revisions?limit=\(limit)&before=\(Registry.milliseconds(last.createdAt))>; rel=\"next\""
        }
        return response
    }

    // MARK: - Timeline and stream

    /// `limit` of a list request: default 100; larger than 1000 is capped at 1000.
    static func limit(_ text: String?) throws -> Int {
        guard let text else { return TimelineQuery.defaultLimit }
        guard let value = Int(text), value >= 1 else { throw HTTPError(.badRequest, message: "limit must be a whole number ≥ 1 (at most \(TimelineQuery.maxLimit) are returned)") }
        return min(value, TimelineQuery.maxLimit)
    }

    func timelineQuery(_ request: Request) throws -> TimelineQuery {
        let query = request.uri.queryParameters
        var result = TimelineQuery()
        if let since = query["since"] {
            guard let value = Int64(since), value >= 0 else { throw HTTPError(.badRequest, message: "since must be a feed id (a whole number)") }
            result.since = value
        } else if let last = request.headers[HTTPField.Name("Last-Event-ID")!], let value = Int64(last) {
            result.since = value
        }
        result.limit = try Self.limit(query["limit"].map(String.init))
        result.agent = query["agent"].map(String.init)
        result.source = query["source"].map(String.init)
        return result
    }

    /// `{"entries":[…],"next":N,"more":B}`: up to `limit` entries after `since`, oldest first.
    /// `next` is the `since` of the following page; `more` says whether it holds anything yet.
    /// The reply is written as it is read from the database, a page of about 1 MiB at a time.
    func timeline(_ request: Request) throws -> Response {
        let query = try timelineQuery(request)
        let registry = registry
        let body = ResponseBody { writer in
            var position = query.since
            var remaining = query.limit
            var first = true
            try await writer.write(ByteBuffer(string: "{\"entries\":["))
            while remaining > 0 {
                var page = query
                page.since = position
                page.limit = remaining
                let rows = try await registry.timelinePage(page)
                guard let last = rows.last else { break }
                var buffer = ByteBuffer()
                for row in rows {
                    if !first { buffer.writeInteger(UInt8(ascii: ",")) }
                    first = false
                    buffer.writeBytes(StatusRecord.json(id: row.id, payload: row.payload))
                }
                try await writer.write(buffer)
                position = last.id
                remaining -= rows.count
            }
            var more = query
            more.since = position
            let hasMore = try await registry.timelineHasEntries(more)
            try await writer.write(ByteBuffer(string: "],\"next\":\(position),\"more\":\(hasMore)}"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: body)
    }

    /// Server-sent events: the backlog after `since` (or `Last-Event-ID`) from the database,
    /// then live records as they are stored. A reader that falls behind the live feed by more
    /// than its buffer (`StatusFeed.Limits`) is cut off: the stream ends, and the reader
    /// reconnects with `Last-Event-ID` (EventSource does so by itself) and catches up from the
    /// database, so it never misses or repeats an entry and never holds more than its bound.
    func stream(_ request: Request) throws -> Response {
        var parsed = try timelineQuery(request)
        parsed.limit = TimelineQuery.maxLimit
        let query = parsed
        let registry = registry, feed = feed, keepAlive = keepAlive
        let body = ResponseBody { writer in
            var position = query.since
            try await writer.write(ByteBuffer(string: "retry: 2000\n: relay status stream\n\n"))
            /// Catches up from the database, a bounded page at a time.
            func catchUp() async throws {
                while true {
                    var backlog = query
                    backlog.since = position
                    let rows = try await registry.timelinePage(backlog)
                    if rows.isEmpty { return }
                    try await Self.send(rows, after: &position, to: &writer)
                }
            }
            // Subscribed first, then caught up: nothing stored in between is missed, and
            // `position` filters what arrives twice. Falling behind while catching up only
            // means catching up again.
            var subscription = feed.subscribe()
            try await catchUp()
            while subscription.overflowed {
                subscription = feed.subscribe()
                try await catchUp()
            }
            let live = subscription
            defer { live.finish() }
            try await withGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    defer { group.cancelAll() }
                    group.addTask {
                        while true {
                            try await Task.sleep(for: keepAlive)
                            live.tick()
                        }
                    }
                    for await event in live {
                        switch event {
                        case .entries(let entries):
                            let rows = entries.compactMap { entry -> (id: Int64, payload: Data)? in
                                if let agent = query.agent, entry.agent != agent { return nil }
                                if let source = query.source, entry.source != source { return nil }
                                return (entry.id, entry.payload)
                            }
                            try await Self.send(rows, after: &position, to: &writer)
                            if let last = entries.last?.id { position = max(position, last) }
                        case .idle:
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        }
                    }
                }
            } onGracefulShutdown: {
                live.finish()
            }
            // Cut off (fell behind) or shutting down: the reader resumes from its last id.
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store",
                                               HTTPField.Name("X-Accel-Buffering")!: "no"], body: body)
    }

    /// Writes stored entries after `position` as SSE events, in one write.
    static func send(_ rows: [(id: Int64, payload: Data)], after position: inout Int64,
                     to writer: inout any ResponseBodyWriter) async throws {
        var buffer = ByteBuffer()
        for row in rows where row.id > position {
            position = row.id
            buffer.writeString("id: \(row.id)\nevent: status\ndata: ")
            buffer.writeBytes(StatusRecord.json(id: row.id, payload: row.payload))
            buffer.writeString("\n\n")
        }
        if buffer.readableBytes > 0 { try await writer.write(buffer) }
    }

    // MARK: - Helpers

    private func authorized(_ request: Request, _ body: () async throws -> Response) async throws -> Response {
        guard let token = Self.token(in: request) else {
            return error(.unauthorized, "a reader token is required (Authorization: Bearer <token>, or ?access_token=)",
                         headers: [.wwwAuthenticate: #"Bearer realm="relay", Basic realm="relay""#])
        }
        let hash = TokenHash.sha256Hex(token)
        // Every reader is compared, in constant time, whatever matches first.
        var matched = false
        for reader in readers where TokenHash.constantTimeEqual(hash, reader.tokenSHA256) { matched = true }
        guard matched else {
            // Counted and logged (sampled) by the router's AuthThrottleMiddleware.
            return error(.unauthorized, "this token is not a reader token", headers: [.wwwAuthenticate: #"Bearer realm="relay", error="invalid_token""#])
        }
        return try await body()
    }

    static func token(in request: Request) -> String? {
        if let header = request.headers[.authorization] {
            if header.lowercased().hasPrefix("bearer ") { return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            if header.lowercased().hasPrefix("basic "), let data = Data(base64Encoded: String(header.dropFirst(6))),
               let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") {
                return String(text[text.index(after: colon)...])
            }
        }
        return request.uri.queryParameters["access_token"].map(String.init)
    }

    private func json<T: Encodable>(_ value: T) throws -> Response { try APIResponse.json(value) }

    private func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        APIResponse.error(status, message, headers: headers)
    }
}

/// The API's JSON answers: a value (no-store), or `{"error": message}`.
enum APIResponse {
    static func json<T: Encodable>(_ value: T) throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(bytes: try StatusRecord.encoder.encode(value))))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        let data = (try? JSONSerialization.data(withJSONObject: ["error": message])) ?? Data()
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
