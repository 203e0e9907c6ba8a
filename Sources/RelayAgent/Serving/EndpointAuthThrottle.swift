import HTTPTypes
import Hummingbird
import RelayShared

/// How the Flux endpoint's `AuthThrottleMiddleware` sees requests.
extension FluxEndpoint {
    /// What a request's credentials are for: `oci` (pull authentication: Basic, or a Bearer
    /// token from `/v2/token`), `events` (a generic-hmac `X-Signature`); nil when it carries
    /// none (probes, artifact URLs, the anonymous first request of a pull).
    @Sendable static func credentialSurface(_ request: Request) -> String? {
        let path = request.uri.path
        if path == "/flux/events" {
            return request.headers[HTTPField.Name("X-Signature")!] != nil ? "events" : nil
        }
        guard path == "/v2" || path.hasPrefix("/v2/") else { return nil }
        return request.headers[.authorization] != nil ? "oci" : nil
    }

    /// 429 in the OCI error shape (`TOOMANYREQUESTS`) for the registry, plain text otherwise.
    @Sendable static func throttled(_ request: Request, _ retryAfter: Int) -> Response {
        let message = "too many failed authentications from this address; retry in \(retryAfter) s"
        if request.uri.path.hasPrefix("/v2") {
            return OCIError(status: .tooManyRequests, code: .tooManyRequests, message: message).response(head: request.method == .head)
        }
        return FluxEventReceiver.plain(.tooManyRequests, message + "\n")
    }
}
