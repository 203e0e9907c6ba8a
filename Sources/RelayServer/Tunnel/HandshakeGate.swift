import Metrics
import NIOCore
import NIOTLS
import Synchronization

/// TLS handshakes in progress on the tunnel port, capped (`limits.maxPendingHandshakes`) by
/// accepting more slowly, not by refusing: at the cap the listener stops accepting, so new
/// connections wait in the kernel's accept queue (then in TCP's own SYN retries), and it
/// accepts again once half the handshakes finished.
///
/// Measured on a kill -9 restart of a relay with 10,000 agents: closing connections beyond
/// the cap (the first version) refused 39,013 connections, and every refusal sent its agent one
/// step further into its exponential backoff (nothing can be said before TLS, so no retry hint):
/// the fleet took 90 s to come back. Pausing the accept loop turns that into waiting.
final class HandshakeGate: Sendable {
    let limit: Int
    private struct State {
        var pending = 0
        var paused = false
        var listener: (any Channel)?
    }
    private let state = Mutex(State())

    init(limit: Int) { self.limit = max(1, limit) }

    /// The listening channel whose accepting is paused and resumed.
    func attach(listener: any Channel) { state.withLock { $0.listener = listener } }

    /// A new connection's handshake starts.
    func enter() {
        let pause: (any Channel)? = state.withLock { state in
            state.pending += 1
            guard state.pending >= limit, !state.paused, let listener = state.listener else { return nil }
            state.paused = true
            return listener
        }
        if let pause {
            Self.pauses.increment()
            pause.eventLoop.execute { pause.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
        }
    }

    /// A handshake ended (done, failed, or the connection closed).
    func leave() {
        let resume: (any Channel)? = state.withLock { state in
            state.pending -= 1
            guard state.paused, state.pending <= limit / 2, let listener = state.listener else { return nil }
            state.paused = false
            return listener
        }
        if let resume {
            resume.eventLoop.execute {
                resume.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in resume.read() }
            }
        }
    }

    static let pauses = Counter(label: "relay_accept_pauses_total")
    static let handshakeTimeouts = Counter(label: "relay_handshake_timeouts_total")

    /// A connection that has not finished its TLS handshake after this long is closed, so
    /// connections that never speak cannot hold the gate (and the accept loop) shut.
    static let handshakeTimeout: TimeAmount = .seconds(10)

    /// The handler that holds a connection's place from accept until its handshake ends.
    func handler() -> Handler { Handler(gate: self) }

    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let gate: HandshakeGate
        private var holding = false
        private var timeout: Scheduled<Void>?

        init(gate: HandshakeGate) { self.gate = gate }

        func channelActive(context: ChannelHandlerContext) {
            gate.enter()
            holding = true
            let channel = context.channel
            timeout = context.eventLoop.scheduleTask(in: HandshakeGate.handshakeTimeout) {
                HandshakeGate.handshakeTimeouts.increment()
                channel.close(promise: nil)
            }
            context.fireChannelActive()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            // Passed on first: the handlers after this one (the client certificate's names)
            // need the event, and a removed handler's context forwards nothing.
            context.fireUserInboundEventTriggered(event)
            if case TLSUserEvent.handshakeCompleted = event {
                release()
                context.pipeline.syncOperations.removeHandler(self, promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            release()
            context.fireChannelInactive()
        }

        func handlerRemoved(context: ChannelHandlerContext) { release() }

        private func release() {
            timeout?.cancel()
            timeout = nil
            guard holding else { return }
            holding = false
            gate.leave()
        }
    }
}
