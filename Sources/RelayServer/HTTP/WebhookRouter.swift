import Foundation
import HTTPTypes
import Hummingbird
import RelayShared

/// The relay's plain-HTTP side: GitLab push webhooks and health.
///
/// `POST /hooks/gitlab`: the `X-Gitlab-Token` header must equal the configured webhook token
/// (compared in constant time); the body is a GitLab push or tag-push event; every source
/// whose repository and ref the event names is packaged at once. Answers 202 with the
/// triggered source names.
///
/// `POST /hooks/oci` (for pipelines that push a chart or artifact, then notify): the same
/// token as `Authorization: Bearer <token>` (or `X-Gitlab-Token`); the body `{"source":
/// "<name>"}` or `?source=<name>` names a Helm chart or OCI artifact source, checked at once.
enum WebhookRouter {
    static func make(webhookToken: String?, sources: [ResolvedServerConfig.Source], scheduler: PackagingScheduler,
                     hub: DesiredStateHub, authFailures: AuthFailureLimiter) -> Router<PeerRequestContext> {
        let router = Router(context: PeerRequestContext.self)
        // First, so it guards every route added after it (the status API's too).
        router.add(middleware: AuthThrottleMiddleware(limiter: authFailures, surface: credentialSurface))
        router.get("healthz") { _, _ in "ok\n" }
        router.get("metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: Observability.exposition())))
        }
        router.get("readyz") { _, _ -> Response in
            let ready = await hub.isReady(sources: sources.map(\.name))
            return json(ready ? .ok : .serviceUnavailable, ["ready": ready])
        }
        router.post("hooks/gitlab") { request, _ -> Response in
            // An empty token is refused by the configuration; should one get here, it turns
            // webhooks off rather than matching a request that sends no token.
            guard let expected = webhookToken, !expected.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                return json(.notFound, ["error": "webhooks are off: set webhookToken in the relay configuration"])
            }
            let given = request.headers[HTTPField.Name("X-Gitlab-Token")!] ?? ""
            guard !given.isEmpty, TokenHash.constantTimeEqual(TokenHash.sha256Hex(given), TokenHash.sha256Hex(expected)) else {
                return json(.unauthorized, ["error": "X-Gitlab-Token does not match the relay's webhookToken"])
            }
            let body = try await request.body.collect(upTo: 4 << 20)
            let event: GitLabPushEvent
            do {
                event = try JSONDecoder().decode(GitLabPushEvent.self, from: Data(buffer: body))
            } catch {
                return json(.badRequest, ["error": "not a GitLab push event: \(error)"])
            }
            let names = event.matchingSources(sources)
            scheduler.trigger(names)
            return json(.accepted, ["triggered": names])
        }
        router.post("hooks/oci") { request, _ -> Response in
            guard let expected = webhookToken, !expected.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                return json(.notFound, ["error": "webhooks are off: set webhookToken in the relay configuration"])
            }
            let bearer = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
            let given = bearer ?? request.headers[HTTPField.Name("X-Gitlab-Token")!] ?? ""
            guard !given.isEmpty, TokenHash.constantTimeEqual(TokenHash.sha256Hex(given), TokenHash.sha256Hex(expected)) else {
                return json(.unauthorized, ["error": "send the relay's webhookToken as Authorization: Bearer <token>"])
            }
            struct Trigger: Decodable { var source: String }
            var name = request.uri.queryParameters["source"].map(String.init)
            if name == nil {
                let body = try await request.body.collect(upTo: 64 << 10)
                name = (try? JSONDecoder().decode(Trigger.self, from: Data(buffer: body)))?.source
            }
            guard let name else { return json(.badRequest, ["error": #"name the source: {"source": "<name>"} or ?source=<name>"#]) }
            guard let source = sources.first(where: { $0.name == name }) else {
                return json(.notFound, ["error": "no source '\(name)' in relay.yaml"])
            }
            guard source.upstream != nil else {
                return json(.badRequest, ["error": "'\(name)' is a Git source: use /hooks/gitlab (push events) for it"])
            }
            scheduler.trigger([name])
            return json(.accepted, ["triggered": [name]])
        }
        return router
    }

    /// What a request's credentials are for (nil: it carries none, or is a probe).
    @Sendable static func credentialSurface(_ request: Request) -> String? {
        if ["/healthz", "/readyz", "/metrics"].contains(request.uri.path) { return nil }
        if request.uri.path.hasPrefix("/hooks/") {
            return request.headers[HTTPField.Name("X-Gitlab-Token")!] != nil || request.headers[.authorization] != nil ? "webhook" : nil
        }
        return request.headers[.authorization] != nil || request.uri.queryParameters["access_token"] != nil ? "status" : nil
    }

    private static func json(_ status: HTTPResponse.Status, _ object: [String: any Sendable]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension DesiredStateHub {
    /// Ready once every configured source has a packaged artifact.
    func isReady(sources: [String]) -> Bool {
        sources.allSatisfy { artifact(forSource: $0) != nil }
    }
}
