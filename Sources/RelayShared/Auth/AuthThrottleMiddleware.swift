import Foundation
import HTTPTypes
import Hummingbird

/// Puts an `AuthFailureLimiter` in front of a router's credential checks. Requests that carry
/// credentials (`surface` names what they are for) from a limited address are answered 429
/// with `Retry-After` before any handler sees them; a 401 answer to them counts as a failure.
/// Requests without credentials pass untouched: they guess nothing (probes, the anonymous first
/// request of an OCI pull, a page asking for a token).
///
/// Add it to the router before the routes it guards (Hummingbird applies middleware to the
/// routes added after it).
public struct AuthThrottleMiddleware<Context: RemoteAddressRequestContext>: RouterMiddleware {
    public typealias Input = Request
    public typealias Output = Response

    let limiter: AuthFailureLimiter
    let surface: @Sendable (Request) -> String?
    let refusal: @Sendable (Request, Int) -> Response

    /// - Parameters:
    ///   - surface: the metric label for a request's credentials (`status`, `webhook`, `oci`,
    ///     …), or nil when it carries none.
    ///   - refusal: the 429 for a limited address (`Retry-After` is added).
    public init(limiter: AuthFailureLimiter, surface: @escaping @Sendable (Request) -> String?,
                refusal: @escaping @Sendable (Request, Int) -> Response = Self.jsonRefusal) {
        self.limiter = limiter
        self.surface = surface
        self.refusal = refusal
    }

    public func handle(_ request: Request, context: Context,
                       next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let surface = surface(request) else { return try await next(request, context) }
        let address = AuthFailureLimiter.key(context.remoteAddress)
        if case .throttled(let seconds) = limiter.admit(address, surface: surface) {
            var response = refusal(request, seconds)
            response.headers[.retryAfter] = String(seconds)
            return response
        }
        let reason = "wrong credentials for \(request.method) \(request.uri.path)"
        do {
            let response = try await next(request, context)
            if response.status == .unauthorized { limiter.recordFailure(address, surface: surface, reason: reason) }
            return response
        } catch let error as any HTTPResponseError where error.status == .unauthorized {
            limiter.recordFailure(address, surface: surface, reason: reason)
            throw error
        }
    }

    /// `429 {"error": "…"}`.
    @Sendable public static func jsonRefusal(_ request: Request, _ retryAfter: Int) -> Response {
        let message = "too many failed authentications from this address; retry in \(retryAfter) s"
        let body = (try? JSONSerialization.data(withJSONObject: ["error": message])) ?? Data()
        return Response(status: .tooManyRequests, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
