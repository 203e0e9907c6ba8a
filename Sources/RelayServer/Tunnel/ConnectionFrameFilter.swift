import Logging
import NIOCore
import Synchronization

/// Keeps connection-level HTTP/2 frames (PING, SETTINGS, WINDOW_UPDATE on stream 0) from
/// grpc-swift's per-connection `NIOAsyncChannel`, whose only reader discards them.
///
/// grpc-swift hands every such frame, after its connection manager has seen it, to an async
/// sequence drained by one task per connection (`for try await _ in inbound {}`, kept to learn
/// when the connection closes). Each transport keepalive PING therefore woke a task on the
/// cooperative pool: with 10,000 idle agents that hand-off (the yield, the futex wake, the
/// task) was ~20 % of the relay's CPU (perf, Benchmarks/fleet_bench.py phase b). The filter
/// sits between the connection manager and that channel's handler and drops the frames;
/// close and error events still pass, so the drain loop ends exactly as before.
final class ConnectionFrameFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny  // HTTP/2 frames: never looked at

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    func channelReadComplete(context: ChannelHandlerContext) {}

    /// Inserts a filter in front of the connection's `NIOAsyncChannel` handler, which
    /// `ConnectionConfigurator.configure` adds last and unnamed (NIO names unnamed handlers
    /// `handler0`, `handler1`, …). Returns false, and changes nothing, when no such handler is
    /// found (a grpc-swift that builds its pipeline differently): the relay then works as
    /// before, at the old cost, and says so once in its log.
    @discardableResult
    static func install(in pipeline: ChannelPipeline.SynchronousOperations, logger: Logger) -> Bool {
        // Unnamed handlers are numbered without gaps (none has been removed yet, the TLS
        // handshake has not started): walk them up to the first missing name.
        var target: ChannelHandler?
        var index = 0
        while let context = try? pipeline.context(name: "handler\(index)") {
            if String(describing: type(of: context.handler)).hasPrefix("NIOAsyncChannelHandler<") {
                target = context.handler
            }
            index += 1
        }
        guard let target, (try? pipeline.addHandler(ConnectionFrameFilter(), position: .before(target))) != nil else {
            Self.warnOnce(logger)
            return false
        }
        return true
    }

    private static let warned = Atomic<Bool>(false)

    private static func warnOnce(_ logger: Logger) {
        guard !warned.exchange(true, ordering: .relaxed) else { return }
        logger.warning("connection-level HTTP/2 frames cannot be filtered with this grpc-swift: idle agents cost more CPU")
    }
}
