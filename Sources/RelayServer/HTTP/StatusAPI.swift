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
/// - `GET /api/v1/agents`: agents, connected or not, last heard, version, granted sources.
/// - `GET /api/v1/agents/{agent}/objects`: the Flux objects the agent reported, latest state.
/// - `GET /api/v1/sources/{source}/revisions`: revisions with, per agent, delivered / applied / healthy.
/// - `GET /api/v1/overview`: clusters × sources (what the page shows).
/// - `GET /api/v1/timeline?since=&agent=&source=&limit=`: stored entries after a feed id.
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

    func add(to router: Router<BasicRequestContext>) {
        let api = router.group("api/v1")
        api.get("agents") { request, _ in try authorized(request) { try json(registry.agentSummaries()) } }
        api.get("agents/:agent/objects") { request, context in
            try authorized(request) {
                let agent = try context.parameters.require("agent")
                guard try registry.agentSummaries().contains(where: { $0.name == agent }) else {
                    return error(.notFound, "no agent named '\(agent)'")
                }
                return try json(registry.fluxObjects(agent: agent))
            }
        }
        api.get("sources/:source/revisions") { request, context in
            try authorized(request) {
                let source = try context.parameters.require("source")
                guard sources.contains(source) else { return error(.notFound, "no source named '\(source)'") }
                return try json(revisions(source: source))
            }
        }
        api.get("overview") { request, _ in try authorized(request) { try json(StatusOverview.build(registry: registry, sources: sources)) } }
        api.get("timeline") { request, _ in
            try authorized(request) {
                let query = try timelineQuery(request)
                let entries = try registry.timelineJSON(query)
                var body = Data("{\"entries\":[".utf8)
                for (index, entry) in entries.enumerated() {
                    if index > 0 { body.append(UInt8(ascii: ",")) }
                    body.append(StatusRecord.json(id: entry.id, payload: entry.payload))
                }
                body.append(Data("],\"next\":\(entries.last?.id ?? query.since)}".utf8))
                return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                                body: .init(byteBuffer: ByteBuffer(bytes: body)))
            }
        }
        api.get("stream") { request, _ in
            try authorized(request) { try stream(request) }
        }
        router.get("/") { request, _ in
            try authorized(request) {
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

    func revisions(source: String) throws -> [RevisionStatus] {
        let deliveries = try registry.allDeliveries().filter { $0.source == source }
        let objects = try registry.fluxObjects().filter { $0.source == source }
        let agents = try registry.agentSummaries().filter { $0.sources.contains(source) }.map(\.name)
        return try registry.revisions(source: source).map { artifact in
            RevisionStatus(revision: artifact.revision, digest: artifact.digest, commit: artifact.commit, createdAt: artifact.createdAt,
                           agents: agents.map { agent in
                               let delivery = deliveries.first { $0.agent == agent && $0.digest == artifact.digest }
                               let applied = objects.filter { $0.agent == agent && $0.revisionApplied == artifact.revision }
                               return .init(agent: agent, delivered: delivery != nil, deliveredAt: delivery?.deliveredAt,
                                            applied: !applied.isEmpty, healthy: !applied.isEmpty && applied.allSatisfy { $0.state == "ready" },
                                            objects: applied)
                           })
        }
    }

    // MARK: - Stream

    func timelineQuery(_ request: Request) throws -> TimelineQuery {
        let query = request.uri.queryParameters
        var result = TimelineQuery()
        if let since = query["since"] {
            guard let value = Int64(since), value >= 0 else { throw HTTPError(.badRequest, message: "since must be a feed id (a whole number)") }
            result.since = value
        } else if let last = request.headers[HTTPField.Name("Last-Event-ID")!], let value = Int64(last) {
            result.since = value
        }
        if let limit = query["limit"] {
            guard let value = Int(limit), (1...10_000).contains(value) else { throw HTTPError(.badRequest, message: "limit must be 1…10000") }
            result.limit = value
        }
        result.agent = query["agent"].map(String.init)
        result.source = query["source"].map(String.init)
        return result
    }

    /// Server-sent events: the backlog after `since` (or `Last-Event-ID`) from the database,
    /// then live records as they are stored. A reader that falls behind the live feed is
    /// caught up from the database again, so it never misses or repeats an entry.
    func stream(_ request: Request) throws -> Response {
        var parsed = try timelineQuery(request)
        parsed.limit = 1000
        let query = parsed
        let registry = registry, feed = feed, keepAlive = keepAlive
        let body = ResponseBody { writer in
            enum Event: Sendable { case records([StatusRecord]), tick, feedEnded }
            let (events, sink) = AsyncStream<Event>.makeStream()
            var position = query.since
            try await writer.write(ByteBuffer(string: "retry: 2000\n: relay status stream\n\n"))
            try await withGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        while true {
                            try await Task.sleep(for: keepAlive)
                            sink.yield(.tick)
                        }
                    }
                    /// Subscribes first, then catches up from the database: nothing stored in
                    /// between is missed, and `position` filters what arrives twice.
                    func follow() -> AsyncStream<[StatusRecord]> {
                        let live = feed.subscribe()
                        group.addTask {
                            for await records in live { sink.yield(.records(records)) }
                            sink.yield(.feedEnded)
                        }
                        return live
                    }
                    func catchUp() async throws {
                        while true {
                            var backlog = query
                            backlog.since = position
                            let rows = try registry.timelineJSON(backlog)
                            try await Self.send(rows, after: &position, to: &writer)
                            if rows.count < backlog.limit { return }
                        }
                    }
                    _ = follow()
                    try await catchUp()
                    for await event in events {
                        switch event {
                        case .records(let records):
                            let rows = records.compactMap { record -> (id: Int64, payload: Data)? in
                                if let agent = query.agent, record.agent != agent { return nil }
                                if let source = query.source, record.object?.source != source { return nil }
                                return record.payload.map { (record.id, $0) }
                            }
                            try await Self.send(rows, after: &position, to: &writer)
                            if let last = records.last?.id { position = max(position, last) }
                        case .tick:
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        case .feedEnded:
                            // Fell behind the live feed: catch up from the database again.
                            _ = follow()
                            try await catchUp()
                        }
                    }
                    group.cancelAll()
                }
            } onGracefulShutdown: {
                sink.finish()
            }
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

    private func authorized(_ request: Request, _ body: () throws -> Response) throws -> Response {
        guard let token = Self.token(in: request) else {
            return error(.unauthorized, "a reader token is required (Authorization: Bearer <token>, or ?access_token=)",
                         headers: [.wwwAuthenticate: #"Bearer realm="relay", Basic realm="relay""#])
        }
        let hash = TokenHash.sha256Hex(token)
        // Every reader is compared, in constant time, whatever matches first.
        var matched = false
        for reader in readers where TokenHash.constantTimeEqual(hash, reader.tokenSHA256) { matched = true }
        guard matched else {
            logger.warning("status API: wrong reader token", metadata: ["path": "\(request.uri.path)"])
            return error(.unauthorized, "this token is not a reader token", headers: [.wwwAuthenticate: #"Bearer realm="relay", error="invalid_token""#])
        }
        return try body()
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

    private func json<T: Encodable>(_ value: T) throws -> Response {
        let data = try StatusRecord.encoder.encode(value)
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    private func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        let data = (try? JSONSerialization.data(withJSONObject: ["error": message])) ?? Data()
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
