import Hummingbird
import HummingbirdCore
import NIOCore

/// What a request-progress handler tells the connection's guard (an outbound user event, so
/// it travels from the HTTP side of the pipeline to the byte side).
enum RequestProgress {
    /// A request head arrived: the connection is busy.
    case started
    /// Every request so far has been answered: the connection waits for the next one.
    case answered
}

/// How a connection beyond a full cap is turned away.
enum Refusal {
    /// `503` with `Retry-After`, then close (plain HTTP).
    case serviceUnavailable
    /// Close at once (HTTPS: nothing can be said before the handshake).
    case close
}

/// First handler of each connection's pipeline (after TLS, if any), on raw bytes: admits the
/// connection into the listener's `ConnectionBudget` (closing an idle one to make room, or
/// refusing this one), and closes it when a request head does not arrive within the header
/// timeout — counted from the connection's start, and for later requests from their first
/// byte. Idle time between requests is left to Hummingbird's idle timeout, which never cuts a
/// response in progress.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let budget: ConnectionBudget
    private let headerTimeout: TimeAmount
    private let refusal: Refusal
    private var started = false
    private var admitted = false
    private var refused = false
    private var awaitingRequest = true
    private var headerTimer: Scheduled<Void>?

    init(budget: ConnectionBudget, headerTimeout: TimeAmount, refusal: Refusal) {
        self.budget = budget
        self.headerTimeout = headerTimeout
        self.refusal = refusal
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }  // nothing from a refused client is read
        if awaitingRequest && headerTimer == nil { armHeaderTimer(context) }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        headerTimer?.cancel()
        headerTimer = nil
        if admitted { budget.release(context.channel) }
        admitted = false
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let progress = event as? RequestProgress else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch progress {
        case .started:
            awaitingRequest = false
            headerTimer?.cancel()
            headerTimer = nil
        case .answered:
            awaitingRequest = true
        }
        if admitted { budget.setIdle(context.channel, awaitingRequest) }
        promise?.succeed()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        switch budget.admit(context.channel) {
        case .admitted:
            admitted = true
            armHeaderTimer(context)
        case .evicting(let idle):
            admitted = true
            idle.close(promise: nil)
            armHeaderTimer(context)
        case .refused:
            refused = true
            refuse(context)
        }
    }

    private func armHeaderTimer(_ context: ChannelHandlerContext) {
        let metrics = budget.metrics
        headerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: headerTimeout) { [self] in
            headerTimer = nil
            guard awaitingRequest else { return }
            metrics.headerTimeouts.increment()
            context.close(promise: nil)
        }
    }

    static let busyResponse = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 63\r\n\r\n"
        + "too many connections are busy; retry after the Retry-After time\n"

    private func refuse(_ context: ChannelHandlerContext) {
        let channel = context.channel
        switch refusal {
        case .close:
            context.close(promise: nil)
        case .serviceUnavailable:
            // Answer, stop sending, and close once the client has read it and closed (at most
            // a second later): closing with its request unread would reset the connection and
            // could lose the answer.
            let answer = context.channel.allocator.buffer(string: Self.busyResponse)
            context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in
                channel.close(mode: .output, promise: nil)
            }
            channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
        }
    }
}

/// After the HTTP codec: tells the guard when the connection is busy with requests and when
/// it has answered all of them (pipelined requests count once each). A server-sent event
/// stream whose client has closed its side is closed at once: EventSource clients never
/// half-close, and the stream would otherwise notice only at its next write.
final class RequestProgressHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP1Channel.Value.InboundPart
    typealias InboundOut = HTTP1Channel.Value.InboundPart
    typealias OutboundIn = HTTP1Channel.Value.OutboundPart
    typealias OutboundOut = HTTP1Channel.Value.OutboundPart

    private var inProgress = 0
    private var streamingEvents = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            inProgress += 1
            if inProgress == 1 { context.triggerUserOutboundEvent(RequestProgress.started, promise: nil) }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            streamingEvents = head.headerFields[.contentType]?.hasPrefix("text/event-stream") == true
        case .end where inProgress > 0:
            streamingEvents = false
            inProgress -= 1
            if inProgress == 0 { context.triggerUserOutboundEvent(RequestProgress.answered, promise: nil) }
        default:
            break
        }
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if streamingEvents, case ChannelEvent.inputClosed? = event as? ChannelEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Names the HTTP part types Hummingbird's HTTP/1 channel carries (NIOHTTPTypes' request and
/// response parts) without depending on that package directly.
protocol AsyncChannelParts {
    associatedtype InboundPart
    associatedtype OutboundPart
}

extension NIOAsyncChannel: AsyncChannelParts {
    typealias InboundPart = Inbound
    typealias OutboundPart = Outbound
}
