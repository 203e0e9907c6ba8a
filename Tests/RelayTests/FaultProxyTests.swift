// FaultProxy against real loopback servers (SwiftNIO): byte-exact pass-through,
// cuts, stalls and clean shutdown.

import Foundation
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("FaultProxy")
struct FaultProxyTests {
    @Test("passes a few MB through byte for byte (server to client)")
    func bulkPassThrough() async throws {
        let size = 4 * 1024 * 1024 + 123
        try await withServer(.bulk(size: size)) { server in
            let proxy = try FaultProxy(upstreamPort: server.port)
            defer { proxy.stop() }
            let received = try await onThread {
                let client = try TestClient(port: proxy.port)
                defer { client.close() }
                return try client.readToEnd(timeout: 60)
            }
            #expect(received.count == size)
            #expect(received == pattern(size))
            #expect(proxy.bytesDownstream == size)
            #expect(proxy.connectionCount == 1)
        }
    }

    @Test("passes a few MB through byte for byte in both directions (echo)")
    func echoPassThrough() async throws {
        let size = 3 * 1024 * 1024
        try await withServer(.echo) { server in
            let proxy = try FaultProxy(upstreamPort: server.port)
            defer { proxy.stop() }
            let sent = randomBytes(size)
            let received = try await onThread {
                let client = try TestClient(port: proxy.port)
                defer { client.close() }
                let writer = Thread { try? client.send(sent) }
                writer.start()
                return try client.read(exactly: size, timeout: 60)
            }
            #expect(received == sent)
            #expect(server.bytesReceived == size)
            // The proxy counts a chunk after handing it to the kernel, so the client may be first.
            try await waitUntil(timeout: 10) { proxy.bytesDownstream == size }
        }
    }

    @Test("cutAfter closes the connection after exactly N bytes; a new connection then works")
    func cutAfter() async throws {
        let size = 1024 * 1024
        try await withServer(.bulk(size: size)) { server in
            let proxy = try FaultProxy(upstreamPort: server.port, fault: .cutAfter(bytes: 300_000))
            defer { proxy.stop() }
            let first = try await onThread {
                let client = try TestClient(port: proxy.port)
                defer { client.close() }
                return try client.readToEnd(timeout: 30)
            }
            #expect(first.count == 300_000)
            #expect(first == Array(pattern(size).prefix(300_000)))

            // The cut has fired: the next connection passes everything.
            let second = try await onThread {
                let client = try TestClient(port: proxy.port)
                defer { client.close() }
                return try client.readToEnd(timeout: 30)
            }
            #expect(second == pattern(size))
            #expect(proxy.connectionCount == 2)

            // A new fault counts from `setFault`.
            proxy.setFault(.cutAfter(bytes: 1_000))
            let third = try await onThread {
                let client = try TestClient(port: proxy.port)
                defer { client.close() }
                return try client.readToEnd(timeout: 30)
            }
            #expect(third.count == 1_000)
            #expect(proxy.bytesDownstream == 300_000 + size + 1_000)
        }
    }

    @Test("stallAfter stops the flow until setFault(.none)")
    func stallUntilCleared() async throws {
        let size = 1024 * 1024
        try await withServer(.bulk(size: size)) { server in
            let proxy = try FaultProxy(upstreamPort: server.port, fault: .stallAfter(bytes: 200_000, seconds: nil))
            defer { proxy.stop() }
            let client = try TestClient(port: proxy.port)
            defer { client.close() }
            let head = try await onThread { try client.read(exactly: 200_000, timeout: 30) }
            #expect(head == Array(pattern(size).prefix(200_000)))
            let during = try await onThread { try client.receive(timeout: 0.5) }
            #expect(during == .timedOut)
            #expect(proxy.bytesDownstream == 200_000)

            proxy.setFault(.none)
            let rest = try await onThread { try client.readToEnd(timeout: 30) }
            #expect(head + rest == pattern(size))
        }
    }

    @Test("stallAfter holds both directions; the connection stays open")
    func stallHoldsBothDirections() async throws {
        try await withServer(.echo) { server in
            let proxy = try FaultProxy(upstreamPort: server.port, fault: .stallAfter(bytes: 4, seconds: nil))
            defer { proxy.stop() }
            let client = try TestClient(port: proxy.port)
            defer { client.close() }
            let ping = try await onThread {
                try client.send(Array("ping".utf8))
                return try client.read(exactly: 4, timeout: 10)
            }
            #expect(ping == Array("ping".utf8))

            // Stalled: what the client sends now does not reach the server.
            let during = try await onThread {
                try client.send(Array("more".utf8))
                return try client.receive(timeout: 0.5)
            }
            #expect(during == .timedOut)
            #expect(server.bytesReceived == 4)

            proxy.setFault(.none)
            let more = try await onThread { try client.read(exactly: 4, timeout: 10) }
            #expect(more == Array("more".utf8))
            #expect(server.bytesReceived == 8)
        }
    }

    @Test("stallAfter with seconds resumes by itself")
    func stallForSeconds() async throws {
        let size = 256 * 1024
        try await withServer(.bulk(size: size)) { server in
            let proxy = try FaultProxy(upstreamPort: server.port, fault: .stallAfter(bytes: 10_000, seconds: 0.5))
            defer { proxy.stop() }
            let (received, stalledFor) = try await onThread {
                let client = try TestClient(port: proxy.port)
                defer { client.close() }
                let head = try client.read(exactly: 10_000, timeout: 30)
                let started = Date()
                let rest = try client.readToEnd(timeout: 30)
                return (head + rest, Date().timeIntervalSince(started))
            }
            #expect(received == pattern(size))
            #expect(stalledFor >= 0.4)
        }
    }

    @Test("stop closes open connections and leaves no descriptors or threads")
    func stopIsClean() async throws {
        try await withServer(.echo) { server in
            let proxy = try FaultProxy(upstreamPort: server.port, fault: .stallAfter(bytes: 0, seconds: nil))
            let client = try TestClient(port: proxy.port)
            defer { client.close() }
            try client.send(Array("held".utf8))
            try await waitUntil(timeout: 10) { proxy.connectionCount == 1 && proxy.openDescriptorCount == 3 }
            #expect(proxy.runningThreadCount == 3)  // accept + two pumps

            proxy.stop()
            #expect(proxy.openDescriptorCount == 0)
            #expect(proxy.runningThreadCount == 0)
            let afterStop = try await onThread { try client.receive(timeout: 10) }
            #expect(afterStop == .endOfStream)
            #expect(throws: (any Error).self) { _ = try TestClient(port: proxy.port) }
            proxy.stop()  // idempotent
        }
    }

    @Test("refuses a non-loopback upstream")
    func loopbackOnly() {
        #expect(throws: FaultProxyError.self) { _ = try FaultProxy(upstreamHost: "192.0.2.1", upstreamPort: 80) }
        #expect(throws: FaultProxyError.self) { _ = try FaultProxy(upstreamPort: 0) }
    }
}

// MARK: - Test servers (SwiftNIO)

/// What the loopback test server does with each connection.
private enum ServerKind {
    /// Echo everything back; count what arrives.
    case echo
    /// Send `pattern(size)`, then close.
    case bulk(size: Int)
}

/// A loopback server on 127.0.0.1:<port 0> running on its own one-thread event loop group.
private final class TestServer: Sendable {
    let port: Int
    private let received: ByteCounter
    var bytesReceived: Int { received.value }

    init(port: Int, received: ByteCounter) {
        self.port = port
        self.received = received
    }
}

private func withServer(_ kind: ServerKind, _ body: (TestServer) async throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let received = ByteCounter()
    do {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    switch kind {
                    case .echo: try channel.pipeline.syncOperations.addHandler(EchoHandler(received: received))
                    case .bulk(let size): try channel.pipeline.syncOperations.addHandler(BulkHandler(size: size))
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        do {
            try await body(TestServer(port: channel.localAddress?.port ?? 0, received: received))
        } catch {
            try? await channel.close()
            throw error
        }
        try? await channel.close()
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
    try await group.shutdownGracefully()
}

private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let received: ByteCounter

    init(received: ByteCounter) { self.received = received }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received.add(Self.unwrapInboundIn(data).readableBytes)
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)  // e.g. a reset from a cut
    }
}

private final class BulkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let size: Int

    init(size: Int) { self.size = size }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        let channel = context.channel
        let buffer = context.channel.allocator.buffer(bytes: pattern(size))
        context.writeAndFlush(Self.wrapOutboundOut(buffer)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A thread-safe counter.
private final class ByteCounter: @unchecked Sendable {  // `count` only under `lock`
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add(_ bytes: Int) { lock.withLock { count += bytes } }
}

// MARK: - Test client (blocking POSIX socket)

private enum ReceiveResult: Equatable {
    case bytes([UInt8])
    case endOfStream
    case timedOut
}

private struct TestClientError: Error, CustomStringConvertible {
    var description: String
}

/// A blocking TCP client to 127.0.0.1. Reads are bounded by `poll` timeouts.
private final class TestClient: Sendable {
    let fd: Int32

    init(port: Int) throws {
        #if canImport(Glibc)
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        #else
        let type = SOCK_STREAM
        #endif
        fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { throw TestClientError(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        #if canImport(Darwin)
        address.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(clamping: port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            posixClose(fd)
            throw TestClientError(description: "connect to 127.0.0.1:\(port): \(reason)")
        }
    }

    func close() { posixClose(fd) }

    func send(_ bytes: [UInt8]) throws {
        #if canImport(Darwin)
        let flags: Int32 = 0
        #else
        let flags = Int32(MSG_NOSIGNAL)
        #endif
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { posixSend(fd, $0.baseAddress, $0.count, flags) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw TestClientError(description: "send: \(String(cString: strerror(errno)))")
            }
            offset += sent
        }
    }

    /// Up to 64 KiB, end of stream, or nothing within `timeout` seconds.
    func receive(timeout: Double) throws -> ReceiveResult {
        var pollDescriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pollDescriptor, 1, Int32(timeout * 1000))
        if ready == 0 { return .timedOut }
        if ready < 0 { throw TestClientError(description: "poll: \(String(cString: strerror(errno)))") }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 { throw TestClientError(description: "recv: \(String(cString: strerror(errno)))") }
        if count == 0 { return .endOfStream }
        return .bytes(Array(buffer[..<count]))
    }

    /// Exactly `count` bytes, or an error on end of stream or when `timeout` passes.
    func read(exactly count: Int, timeout: Double) throws -> [UInt8] {
        let deadline = Date() + timeout
        var result: [UInt8] = []
        while result.count < count {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                throw TestClientError(description: "timed out after \(result.count) of \(count) bytes")
            }
            switch try receive(timeout: min(remaining, 1)) {
            case .bytes(let bytes): result += bytes
            case .endOfStream: throw TestClientError(description: "end of stream after \(result.count) of \(count) bytes")
            case .timedOut: continue
            }
        }
        if result.count > count { throw TestClientError(description: "got \(result.count) bytes, expected \(count)") }
        return result
    }

    /// Everything until end of stream; an error when `timeout` passes first.
    func readToEnd(timeout: Double) throws -> [UInt8] {
        let deadline = Date() + timeout
        var result: [UInt8] = []
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                throw TestClientError(description: "no end of stream within \(timeout)s (\(result.count) bytes read)")
            }
            switch try receive(timeout: min(remaining, 1)) {
            case .bytes(let bytes): result += bytes
            case .endOfStream: return result
            case .timedOut: continue
            }
        }
    }
}

// `close`/`send` are shadowed by TestClient's own methods.
private func posixClose(_ fd: Int32) { _ = close(fd) }
private func posixSend(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ flags: Int32) -> Int {
    send(fd, buffer, count, flags)
}

// MARK: - Helpers

/// Deterministic test data: byte `i` of a simple 32-bit LCG stream.
private func pattern(_ count: Int) -> [UInt8] {
    var state: UInt32 = 0x1234_5678
    return (0..<count).map { _ in
        state = state &* 1_664_525 &+ 1_013_904_223
        return UInt8(truncatingIfNeeded: state >> 24)
    }
}

private func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
}

/// Runs blocking socket work on its own thread, so it never ties up a Swift
/// concurrency thread (there are only as many as cores).
private func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Polls `condition` every 10 ms until it holds; fails the test after `timeout` seconds.
private func waitUntil(timeout: Double, _ condition: @Sendable () -> Bool) async throws {
    let deadline = Date() + timeout
    while !condition() {
        guard Date() < deadline else {
            Issue.record("condition not met within \(timeout)s")
            return
        }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
}
