import Dispatch
import NIOCore
import Synchronization

/// When a tunnel connection last received bytes from its agent: proof of life for agents on
/// transport keepalive, whose HTTP/2 PINGs the relay's HTTP/2 layer answers without any
/// message reaching the session (see `TunnelKeepalive`).
final class ConnectionClock: Sendable {
    private let lastRead = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)
    private let channel: any Channel

    init(channel: any Channel) { self.channel = channel }

    func read(at now: UInt64) { lastRead.store(now, ordering: .relaxed) }

    /// Uptime nanoseconds of the last read.
    var lastReadNanoseconds: UInt64 { lastRead.load(ordering: .relaxed) }

    /// Drops the connection (a dead peer's socket is not left to TCP's own timeouts).
    func close() { channel.close(promise: nil) }
}

/// The clock of every open tunnel connection, by `ConnectionKey`, so that a session finds its
/// connection's.
final class ConnectionClocks: Sendable {
    private let clocks = Mutex<[String: ConnectionClock]>([:])

    func clock(for peer: String) -> ConnectionClock? { clocks.withLock { $0[peer] } }

    fileprivate func register(_ clock: ConnectionClock, peer: String) { clocks.withLock { $0[peer] = clock } }

    fileprivate func forget(peer: String) { _ = clocks.withLock { $0.removeValue(forKey: peer) } }

    /// The per-connection handler that keeps the clock (after TLS: decrypted bytes only).
    func handler() -> ConnectionClockHandler { ConnectionClockHandler(clocks: self) }
}

final class ConnectionClockHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let clocks: ConnectionClocks
    private var clock: ConnectionClock?
    private var peer: String?

    fileprivate init(clocks: ConnectionClocks) { self.clocks = clocks }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let peer = ConnectionKey.of(context.channel) else { return }
        let clock = ConnectionClock(channel: context.channel)
        clocks.register(clock, peer: peer)
        (self.peer, self.clock) = (peer, clock)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clock?.read(at: DispatchTime.now().uptimeNanoseconds)
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        forget()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { forget() }

    private func forget() {
        if let peer { clocks.forget(peer: peer) }
        (peer, clock) = (nil, nil)
    }
}
