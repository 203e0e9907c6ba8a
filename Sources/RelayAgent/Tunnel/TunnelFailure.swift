import Foundation
import GRPCCore
import Metrics
import NIOCore
import NIOSSL
import RelayShared
import Synchronization

/// Why a session with the relay failed: a stable reason (the `reason` label of
/// `relay_agent_tunnel_errors_total`, and `reason` in `relay-agent fetch`'s answer) and a
/// sentence that tells the operator what to do.
struct TunnelFailure: Sendable, Equatable {
    enum Reason: String, Sendable {
        /// The relay's certificate does not chain to `caFile`.
        case certificateUnknownCA = "certificate_unknown_ca"
        /// It does not name the host in `relay:`.
        case certificateNameMismatch = "certificate_name_mismatch"
        case certificateExpired = "certificate_expired"
        case certificateNotYetValid = "certificate_not_yet_valid"
        /// Refused for another reason.
        case certificateUntrusted = "certificate_untrusted"
        /// Any other TLS handshake failure (TLS version, the relay refusing our client certificate).
        case tlsHandshake = "tls_handshake_failed"
        /// UNAUTHENTICATED: the token.
        case tokenRefused = "token_refused"
        /// PERMISSION_DENIED: the client certificate does not name this agent.
        case permissionDenied = "permission_denied"
        /// FAILED_PRECONDITION / INVALID_ARGUMENT: protocol version or a protocol rule.
        case protocolRefused = "protocol_refused"
        /// UNAVAILABLE with a reason from the relay (e.g. it cannot write its registry).
        case relayUnavailable = "relay_unavailable"
        /// Nothing reached, or the connection broke before the session started.
        case connectionFailed = "connection_failed"
        /// An established session ended (silence, a cut connection, the relay closing it).
        case connectionLost = "connection_lost"
    }

    var reason: Reason
    var message: String

    /// Counts one failure under its reason.
    func count() {
        Counter(label: "relay_agent_tunnel_errors_total", dimensions: [("reason", reason.rawValue)]).increment()
    }

    /// Classifies the error a session (or a single call) ended with. `tlsError` is what the TLS
    /// layer reported on that connection, if anything; certificate refusals are explained by
    /// `RelayCertificateCheck`.
    static func classify(_ error: any Error, tlsError: (any Error)?, welcomed: Bool, relay: HostPort,
                         caFile: String) async -> TunnelFailure {
        if !welcomed, let tlsError {
            if let extra = tlsError as? NIOSSLExtraError, extra == .failedToValidateHostname {
                let problem = await RelayCertificateCheck.diagnose(relay: relay, caFile: caFile)
                return TunnelFailure(reason: .certificateNameMismatch,
                                     message: (problem ?? .nameMismatch(names: [])).message(relay: relay, caFile: caFile))
            }
            let text = "\(tlsError)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                if let problem = await RelayCertificateCheck.diagnose(relay: relay, caFile: caFile) {
                    return TunnelFailure(reason: problem.reason, message: problem.message(relay: relay, caFile: caFile))
                }
                return TunnelFailure(reason: .certificateUntrusted,
                                     message: "the relay's certificate was refused (\(text)): check caFile \(caFile) and the relay's certificate")
            }
            return TunnelFailure(reason: .tlsHandshake, message: "the TLS handshake with the relay failed (\(text)): the relay needs "
                                 + "TLS 1.3 unless its tls.minVersion says otherwise, and a client certificate if it sets tls.clientCAFile "
                                 + "(clientCertFile, clientKeyFile)")
        }
        if let rpc = error as? RPCError {
            // The relay answered but cannot serve now (e.g. its disk is full) and says why.
            let relaySaysWhy = rpc.metadata[stringValues: "relay-error"].first(where: { _ in true }) != nil
            switch rpc.code {
            case .unauthenticated:
                return TunnelFailure(reason: .tokenRefused, message: "the relay refused the token (\(rpc.message)); check tokenFile")
            case .permissionDenied:
                return TunnelFailure(reason: .permissionDenied, message: "the relay refused this agent: \(rpc.message)")
            case .failedPrecondition, .invalidArgument:
                return TunnelFailure(reason: .protocolRefused, message: "the relay refused the connection: \(rpc.message)")
            case .unavailable where welcomed:
                return TunnelFailure(reason: .connectionLost, message: "\(rpc.code): \(rpc.message)")
            case .unavailable where relaySaysWhy:
                return TunnelFailure(reason: .relayUnavailable, message: "the relay is unavailable: \(rpc.message); retrying")
            default:
                break
            }
            return TunnelFailure(reason: welcomed ? .connectionLost : .connectionFailed, message: "\(rpc.code): \(rpc.message)")
        }
        return TunnelFailure(reason: welcomed ? .connectionLost : .connectionFailed, message: "\(error)")
    }
}

/// The first TLS handshake error seen on a connection (grpc-swift reports a refused handshake
/// only as a connection closed before the HTTP/2 preface).
final class TLSErrorRecorder: Sendable {
    private let first = Mutex<(any Error)?>(nil)

    var error: (any Error)? { first.withLock { $0 } }

    func record(_ error: any Error) {
        guard error is NIOSSLExtraError || (error as? NIOSSLError).map({ if case .handshakeFailed = $0 { true } else { false } }) == true
        else { return }
        first.withLock { if $0 == nil { $0 = error } }
    }

    /// For `channelDebuggingCallbacks.onCreateTCPConnection`: a handler right after TLS that
    /// records its errors and passes them on.
    @Sendable func install(on channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            let tls = try sync.handler(type: NIOSSLClientHandler.self)
            try sync.addHandler(Handler(recorder: self), position: .after(tls))
        }
    }

    private final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        let recorder: TLSErrorRecorder
        init(recorder: TLSErrorRecorder) { self.recorder = recorder }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            recorder.record(error)
            context.fireErrorCaught(error)
        }
    }
}
