import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// Hummingbird's HTTP/1.1 child channel with `HTTPLimits` applied: a `ConnectionGuardHandler`
/// in front (cap, header timeout), a `RequestProgressHandler` after the codec, and
/// Hummingbird's own idle timeout.
struct LimitedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let budget: ConnectionBudget
    let headerTimeout: TimeAmount
    let refusal: Refusal

    init(responder: @escaping HTTPChannelHandler.Responder, limits: HTTPLimits, budget: ConnectionBudget, refusal: Refusal) {
        base = HTTP1Channel(responder: responder, configuration: .init(
            additionalChannelHandlers: [RequestProgressHandler()],
            idleTimeout: TimeAmount(limits.idleTimeout)))
        self.budget = budget
        headerTimeout = TimeAmount(limits.headerTimeout)
        self.refusal = refusal
    }

    var responder: HTTPChannelHandler.Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                ConnectionGuardHandler(budget: budget, headerTimeout: headerTimeout, refusal: refusal))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 (over TLS when `tls` is set) with `limits` applied; the listener's metrics are
    /// `<metricsPrefix>_http_connections_open`, `…_refused_total`, `…_evicted_total` and
    /// `<metricsPrefix>_http_header_timeouts_total`.
    public static func limited(_ limits: HTTPLimits, metricsPrefix: String,
                               tls: TLSConfiguration? = nil) -> HTTPServerBuilder {
        let budget = ConnectionBudget(capacity: limits.maxConnections, metricsPrefix: metricsPrefix)
        return HTTPServerBuilder { responder in
            let channel = LimitedHTTP1Channel(responder: responder, limits: limits, budget: budget,
                                              refusal: tls == nil ? .serviceUnavailable : .close)
            guard let tls else { return channel }
            return try TLSChannel(channel, tlsConfiguration: tls)
        }
    }
}
