import Metrics
import NIOCore
import NIOTLS
import Synchronization

/// TLS handshakes in progress on the tunnel port, capped (`limits.maxPendingHandshakes`): a
/// connection beyond the cap is closed as soon as it is accepted, before the relay spends a
/// handshake's CPU on it. That refusal carries no retry-after (nothing can be said before
/// TLS): the agent's jittered backoff spreads those. The cap only bites when clients connect
/// faster than the relay can complete handshakes; `SessionAdmission` paces the rest.
final class HandshakeGate: Sendable {
    let limit: Int
    private let pending = Atomic<Int>(0)

    init(limit: Int) { self.limit = max(1, limit) }

    /// Takes a place for a new connection's handshake, or returns false.
    func enter() -> Bool {
        let now = pending.wrappingAdd(1, ordering: .relaxed).newValue
        guard now <= limit else {
            pending.wrappingSubtract(1, ordering: .relaxed)
            Self.refused.increment()
            return false
        }
        return true
    }

    func leave() { pending.wrappingSubtract(1, ordering: .relaxed) }

    var inProgress: Int { pending.load(ordering: .relaxed) }

    static let refused = Counter(label: "relay_handshakes_refused_total")

    /// The handler that holds a connection's place from accept until its handshake ends.
    func handler() -> Handler { Handler(gate: self) }

    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let gate: HandshakeGate
        private var holding = false

        init(gate: HandshakeGate) { self.gate = gate }

        func channelActive(context: ChannelHandlerContext) {
            guard gate.enter() else {
                context.close(promise: nil)
                return
            }
            holding = true
            context.fireChannelActive()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { release(context: context) }
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            if holding { holding = false; gate.leave() }
            context.fireChannelInactive()
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if holding { holding = false; gate.leave() }
        }

        private func release(context: ChannelHandlerContext) {
            guard holding else { return }
            holding = false
            gate.leave()
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
    }
}
