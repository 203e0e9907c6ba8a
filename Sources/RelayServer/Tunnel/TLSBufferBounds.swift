import NIOCore

/// Sits between TLS (NIOSSLHandler) and HTTP/2 on every tunnel connection and keeps the
/// buffers each connection holds small. Measured with heaptrack on 1,000 idle agents, and
/// with 1,000–2,500 agents fetching a 1 MiB artifact (Benchmarks/fleet_bench.py):
///
/// - Inbound: TLS hands HTTP/2 slices of its one 32 KiB plaintext buffer, and the HTTP/2
///   frame parser keeps the slice it was given between reads, so TLS has to allocate another
///   32 KiB for the next read (copy on write) and each idle connection held ~64 KiB. Each read
///   is copied into a buffer of its own size instead (the relay receives only control
///   messages: heartbeats, acks, status), so the parser keeps bytes, not TLS's buffer.
/// - Outbound: TLS encrypts everything written before a flush into one buffer that it then
///   keeps at that capacity for the life of the connection (NIOSSL preserves it). A 1 MiB Fetch
///   chunk left ~1 MiB behind on every connection that ever fetched (the relay grew by
///   ~1.6 MB per agent in a fleet-wide fetch). Large writes are passed on in slices of at most
///   one TLS record, each flushed, so that buffer never outgrows one record.
final class TLSBufferBounds: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Large writes (artifact bytes) in flight, relay-wide.
    private let outbound: OutboundBytes
    /// This connection's `ConnectionKey`.
    private var peer: String?

    init(outbound: OutboundBytes) { self.outbound = outbound }

    func handlerAdded(context: ChannelHandlerContext) {
        peer = ConnectionKey.of(context.channel)
        if let peer { outbound.opened(peer) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let peer { outbound.closed(peer) }
        peer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let peer { outbound.closed(peer) }
        peer = nil
    }

    /// Plaintext per slice: one TLS record (16 KiB) minus room for the record's overhead, so
    /// an encrypted slice fits TLS's 16 KiB output buffer.
    static let sliceBytes = 16_000

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        var copy = context.channel.allocator.buffer(capacity: buffer.readableBytes)
        copy.writeImmutableBuffer(buffer)
        context.fireChannelRead(wrapInboundOut(copy))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = unwrapOutboundIn(data)
        guard buffer.readableBytes > Self.sliceBytes else {
            context.write(data, promise: promise)
            return
        }
        // Counted out of the Fetch bytes in flight once the socket has it (a failed write means
        // the connection is gone: `closed` counts out the rest).
        let outbound = self.outbound
        let peer = self.peer
        while buffer.readableBytes > Self.sliceBytes, let slice = buffer.readSlice(length: Self.sliceBytes) {
            let written = context.eventLoop.makePromise(of: Void.self)
            if let peer { written.futureResult.whenSuccess { outbound.sent(Self.sliceBytes, peer: peer) } }
            context.write(wrapOutboundOut(slice), promise: written)
            context.flush()
        }
        let rest = buffer.readableBytes
        let written = context.eventLoop.makePromise(of: Void.self)
        if let peer { written.futureResult.whenSuccess { outbound.sent(rest, peer: peer) } }
        if let promise { written.futureResult.cascade(to: promise) }
        context.write(wrapOutboundOut(buffer), promise: written)
    }
}
