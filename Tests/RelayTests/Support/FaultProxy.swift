// Test support: a loopback TCP proxy that injects network faults (cuts and stalls)
// between a client and a server, for reconnect / timeout tests.
//
// Plain POSIX sockets and Foundation threads: two blocking pump threads per
// connection plus one accept thread. All shared state lives in `FaultProxy.Core`
// behind one NSCondition.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a ``FaultProxy`` could not start. The descriptions say what to do.
enum FaultProxyError: Error, CustomStringConvertible {
    /// The upstream host did not resolve to a loopback address.
    case upstreamNotLoopback(host: String)
    /// The upstream host or port could not be resolved.
    case unresolvableUpstream(host: String, port: Int, reason: String)
    /// A socket call failed while setting up the listener.
    case socketFailed(call: String, reason: String)

    var description: String {
        switch self {
        case .upstreamNotLoopback(let host):
            return "FaultProxy forwards only to loopback addresses, but '\(host)' is not one; "
                + "start the upstream server on 127.0.0.1 or ::1"
        case .unresolvableUpstream(let host, let port, let reason):
            return "FaultProxy cannot resolve upstream \(host):\(port): \(reason); "
                + "pass a numeric loopback address such as \"127.0.0.1\" and a port in 1...65535"
        case .socketFailed(let call, let reason):
            return "FaultProxy could not set up its listener (\(call): \(reason)); "
                + "check the process's file-descriptor limit (ulimit -n)"
        }
    }
}

/// A TCP proxy on `127.0.0.1:<free port>` that forwards to a loopback upstream and
/// can cut or stall the traffic after a number of server→client bytes.
///
/// Faults are per proxy: one byte counter shared by all connections, counted from
/// the proxy's start or the last ``setFault(_:)``. A fault fires once; afterwards the
/// proxy passes traffic normally (so a reconnecting client can finish) until the
/// next ``setFault(_:)``.
///
/// Bounded: at most ``maxConnections`` connections at a time (more are closed on
/// accept), upstream connects time out after 5 s, and ``stop()`` (also run on
/// deinit) closes every socket and waits for every thread it started.
final class FaultProxy: Sendable {
    enum Fault: Sendable {
        /// Forward everything.
        case none
        /// Close both directions once this many bytes have gone from upstream to the client (server→client direction), counting from proxy start or the last `setFault`.
        ///
        /// Exactly `bytes` bytes reach the client(s); then every connection open at that
        /// moment is closed on both sides with an orderly shutdown (FIN, so the client
        /// reads the bytes and then EOF). Later connections pass traffic normally.
        case cutAfter(bytes: Int)
        /// After this many server→client bytes, stop forwarding in both directions (connection stays open, nothing flows) until `setFault(.none)` or for `seconds`.
        ///
        /// Exactly `bytes` bytes reach the client(s); then no proxy connection forwards
        /// anything in either direction (data is held; TCP flow control pushes back on
        /// the peers). With `seconds: nil` the stall lasts until the next `setFault`;
        /// otherwise it ends by itself after `seconds` and the proxy passes traffic
        /// normally from then on.
        case stallAfter(bytes: Int, seconds: Double?)
    }

    /// The most connections open at once; further ones are accepted and closed at once.
    static let maxConnections = 64

    private let core: Core
    private let listenPort: Int

    /// Starts listening on 127.0.0.1 on a free port, forwarding each connection to
    /// `upstreamHost:upstreamPort`, which must be a loopback address.
    ///
    /// `sourceHost` (a loopback address such as "127.0.0.2") binds the proxy's upstream
    /// connections to it, so the upstream sees the clients come from that address.
    ///
    /// - Throws: ``FaultProxyError`` if the upstream is not loopback or the listener
    ///   cannot be set up.
    init(upstreamHost: String = "127.0.0.1", upstreamPort: Int, fault: Fault = .none, sourceHost: String? = nil) throws {
        let upstream = try Self.resolveLoopback(host: upstreamHost, port: upstreamPort)
        let source = try sourceHost.map { try Self.resolveLoopback(host: $0, port: 0, anyPort: true) }
        let (listener, port) = try Self.listenOnLoopback()
        self.listenPort = port
        self.core = Core(upstream: upstream, source: source, fault: fault)
        core.startAccepting(listener)
    }

    deinit {
        core.stop()
    }

    /// The port the proxy listens on (on 127.0.0.1).
    var port: Int { listenPort }

    /// Replaces the fault, for current and future connections, and restarts the fault's
    /// byte count. Ends an ongoing stall.
    func setFault(_ fault: Fault) {
        core.setFault(fault)
    }

    /// Connections accepted so far.
    var connectionCount: Int { core.read { $0.connectionCount } }

    /// Server→client bytes forwarded in total (delivered to the clients' sockets).
    var bytesDownstream: Int { core.read { $0.bytesDownstream } }

    /// Stops listening, closes every connection (both sides) and waits up to 10 s for
    /// all of the proxy's threads to finish. Idempotent.
    func stop() {
        core.stop()
    }

    /// Descriptors the proxy currently holds (listener and connection sockets); 0 after ``stop()``.
    var openDescriptorCount: Int { core.read { $0.openDescriptors } }

    /// Threads of the proxy still running; 0 after ``stop()``.
    var runningThreadCount: Int { core.read { $0.runningThreads } }
}

// MARK: - Shared state

extension FaultProxy {
    /// What the proxy is doing about faults right now.
    fileprivate enum Phase {
        case passThrough
        /// Cut when the admitted downstream count reaches `limit` (relative to `base`).
        case cutArmed(limit: Int)
        /// Stall when the admitted downstream count reaches `limit`.
        case stallArmed(limit: Int, seconds: Double?)
        /// The last bytes before a cut are being sent; everything else waits.
        case cutting
        /// Nothing flows until `until` (nil: until `setFault`).
        case stalled(until: Date?)
    }

    /// One proxied connection. `@unchecked Sendable`: its mutable fields are only
    /// touched with `Core.condition` locked (`upstream` is set before the second pump
    /// starts and never changes afterwards).
    fileprivate final class Connection: @unchecked Sendable {
        let client: Int32
        var upstream: Int32 = -1
        /// Set when a cut or `stop()` closed it; its pumps stop.
        var closed = false
        /// Pumps (threads) still using the descriptors; the last one closes them.
        var activePumps = 1

        init(client: Int32) { self.client = client }

        /// Wakes both pumps: blocked reads return 0 and blocked writes fail.
        func shutdownBoth() {
            _ = shutdown(client, Int32(SHUT_RDWR))
            if upstream >= 0 { _ = shutdown(upstream, Int32(SHUT_RDWR)) }
        }
    }

    /// How a pump may proceed with the bytes it holds.
    fileprivate enum Admission {
        /// Send this many bytes (then, if `cutGeneration` is set, perform that cut).
        case forward(Int, cutGeneration: Int?)
        /// The connection is gone; stop pumping.
        case closed
    }

    /// The mutable part of the proxy, only touched with `Core.condition` locked.
    fileprivate struct State {
        var phase: Phase = .passThrough
        /// Bumped by every `setFault`, so a cut armed before it is not carried out after it.
        var generation = 0
        /// Downstream bytes admitted for sending (fault accounting).
        var admittedDownstream = 0
        /// `admittedDownstream` at the last `setFault` (or start).
        var faultBase = 0
        var bytesDownstream = 0
        var connectionCount = 0
        var openDescriptors = 0
        var runningThreads = 0
        var stopped = false
        var connections: [ObjectIdentifier: Connection] = [:]
    }

    /// Threads and sockets. `@unchecked Sendable`: every mutable field is in `state`,
    /// which is only accessed with `condition` locked; the rest is immutable.
    fileprivate final class Core: @unchecked Sendable {
        private let condition = NSCondition()
        private var state = State()
        private let upstream: SocketAddress
        private let source: SocketAddress?
        private let threads = DispatchGroup()

        fileprivate init(upstream: SocketAddress, source: SocketAddress?, fault: Fault) {
            self.upstream = upstream
            self.source = source
            apply(fault)
        }

        func read<T>(_ body: (State) -> T) -> T {
            condition.lock()
            defer { condition.unlock() }
            return body(state)
        }

        func setFault(_ fault: Fault) {
            condition.lock()
            apply(fault)
            condition.broadcast()
            condition.unlock()
        }

        /// Call with `condition` locked (or from `init`).
        private func apply(_ fault: Fault) {
            state.generation += 1
            state.faultBase = state.admittedDownstream
            switch fault {
            case .none: state.phase = .passThrough
            case .cutAfter(let bytes): state.phase = .cutArmed(limit: max(0, bytes))
            case .stallAfter(let bytes, let seconds): state.phase = .stallArmed(limit: max(0, bytes), seconds: seconds)
            }
        }

        func stop() {
            condition.lock()
            if !state.stopped {
                state.stopped = true
                for connection in state.connections.values {
                    connection.closed = true
                    connection.shutdownBoth()
                }
                condition.broadcast()
            }
            condition.unlock()
            // The accept thread notices `stopped` within its 100 ms poll interval.
            _ = threads.wait(timeout: .now() + 10)
        }

        // MARK: Threads

        /// Runs `body` on a new thread counted in `runningThreads` and `threads`.
        /// Call with `condition` locked.
        private func spawnLocked(_ body: @escaping @Sendable () -> Void) {
            state.runningThreads += 1
            threads.enter()
            let thread = Thread { [self] in
                body()
                condition.lock()
                state.runningThreads -= 1
                condition.unlock()
                threads.leave()
            }
            thread.stackSize = 512 * 1024
            thread.start()
        }

        fileprivate func startAccepting(_ listener: Int32) {
            condition.lock()
            state.openDescriptors += 1
            spawnLocked { [self] in acceptLoop(listener) }
            condition.unlock()
        }

        private func acceptLoop(_ listener: Int32) {
            defer {
                close(listener)
                condition.lock()
                state.openDescriptors -= 1
                condition.unlock()
            }
            while !read({ $0.stopped }) {
                var pollDescriptor = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                let ready = poll(&pollDescriptor, 1, 100)
                if ready <= 0 { continue }  // timeout, EINTR
                let client = Socket.accept(listener)
                guard client >= 0 else { continue }  // ECONNABORTED, EMFILE, ...
                Socket.configure(client)

                condition.lock()
                state.connectionCount += 1
                state.openDescriptors += 1
                if state.stopped || state.connections.count >= FaultProxy.maxConnections {
                    state.openDescriptors -= 1
                    condition.unlock()
                    close(client)
                    continue
                }
                let connection = Connection(client: client)
                state.connections[ObjectIdentifier(connection)] = connection
                spawnLocked { [self] in runConnection(connection) }
                condition.unlock()
            }
        }

        /// Connects upstream, then pumps server→client here and client→server on a
        /// second thread.
        private func runConnection(_ connection: Connection) {
            let upstreamSocket = Socket.connect(to: upstream, from: source, timeout: 5, cancelled: { [self] in
                read { $0.stopped } || isClosed(connection)
            })
            condition.lock()
            if upstreamSocket >= 0 {
                state.openDescriptors += 1
                connection.upstream = upstreamSocket
                if connection.closed {
                    _ = shutdown(upstreamSocket, Int32(SHUT_RDWR))  // closed while connecting
                } else {
                    connection.activePumps += 1
                    spawnLocked { [self] in pump(connection, downstream: false) }
                }
            } else {
                connection.closed = true
                connection.shutdownBoth()
            }
            condition.unlock()
            if upstreamSocket >= 0 {
                pump(connection, downstream: true)
            } else {
                finishPump(connection)
            }
        }

        private func isClosed(_ connection: Connection) -> Bool {
            condition.lock()
            defer { condition.unlock() }
            return connection.closed
        }

        // MARK: Pumping

        /// Copies one direction until EOF, an error, a cut or `stop()`.
        private func pump(_ connection: Connection, downstream: Bool) {
            let source = downstream ? connection.upstream : connection.client
            let destination = downstream ? connection.client : connection.upstream
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 1)
            defer {
                buffer.deallocate()
                finishPump(connection)
            }
            while true {
                let count = recv(source, buffer.baseAddress, buffer.count, 0)
                if count < 0 && errno == EINTR { continue }
                if count == 0 {
                    // Orderly EOF: pass the half-close on, let the other direction finish.
                    _ = shutdown(destination, Int32(SHUT_WR))
                    return
                }
                if count < 0 {
                    abort(connection)
                    return
                }
                var offset = 0
                while offset < count {
                    switch admit(count - offset, downstream: downstream, connection: connection) {
                    case .closed:
                        return
                    case .forward(let allowed, let cutGeneration):
                        let chunk = UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + allowed)])
                        guard Socket.sendAll(destination, chunk) else {
                            abort(connection)
                            return
                        }
                        offset += allowed
                        if downstream {
                            condition.lock()
                            state.bytesDownstream += allowed
                            condition.unlock()
                        }
                        if let cutGeneration {
                            cut(generation: cutGeneration)
                            return
                        }
                    }
                }
            }
        }

        /// Decides how many of `available` bytes may be sent now, waiting while the
        /// proxy is stalled or a cut is in progress.
        private func admit(_ available: Int, downstream: Bool, connection: Connection) -> Admission {
            condition.lock()
            defer { condition.unlock() }
            while true {
                if state.stopped || connection.closed { return .closed }
                let sent = state.admittedDownstream - state.faultBase
                switch state.phase {
                case .passThrough:
                    if downstream { state.admittedDownstream += available }
                    return .forward(available, cutGeneration: nil)
                case .cutArmed(let limit), .stallArmed(let limit, _):
                    guard downstream else { return .forward(available, cutGeneration: nil) }
                    let allowed = min(available, max(0, limit - sent))
                    state.admittedDownstream += allowed
                    if sent + allowed < limit {
                        return .forward(allowed, cutGeneration: nil)
                    }
                    // The limit is reached with these bytes.
                    if case .stallArmed(_, let seconds) = state.phase {
                        state.phase = .stalled(until: seconds.map { Date() + $0 })
                        return .forward(allowed, cutGeneration: nil)
                    }
                    state.phase = .cutting
                    return .forward(allowed, cutGeneration: state.generation)
                case .cutting:
                    condition.wait()
                case .stalled(let until):
                    if let until, until <= Date() {
                        state.phase = .passThrough
                        state.faultBase = state.admittedDownstream
                        condition.broadcast()
                        continue
                    }
                    if let until { _ = condition.wait(until: until) } else { condition.wait() }
                }
            }
        }

        /// Closes every open connection, unless a `setFault` came in since the cut was armed.
        private func cut(generation: Int) {
            condition.lock()
            defer { condition.unlock() }
            guard case .cutting = state.phase, state.generation == generation else { return }
            for connection in state.connections.values {
                connection.closed = true
                connection.shutdownBoth()
            }
            state.phase = .passThrough
            state.faultBase = state.admittedDownstream
            condition.broadcast()
        }

        /// Tears a connection down after an I/O error on either side.
        private func abort(_ connection: Connection) {
            condition.lock()
            connection.closed = true
            connection.shutdownBoth()
            condition.broadcast()
            condition.unlock()
        }

        /// The last pump of a connection closes its descriptors and forgets it.
        private func finishPump(_ connection: Connection) {
            condition.lock()
            connection.activePumps -= 1
            let last = connection.activePumps == 0
            if last {
                state.connections[ObjectIdentifier(connection)] = nil
                state.openDescriptors -= connection.upstream >= 0 ? 2 : 1
            }
            condition.unlock()
            if last {
                close(connection.client)
                if connection.upstream >= 0 { close(connection.upstream) }
            }
        }
    }
}

// MARK: - Sockets

extension FaultProxy {
    /// A resolved socket address (the bytes of a `sockaddr_in` or `sockaddr_in6`).
    fileprivate struct SocketAddress: Sendable {
        var family: Int32
        var bytes: [UInt8]
    }

    /// Resolves `host` (numeric or e.g. "localhost"), preferring IPv4, and insists on loopback.
    private static func resolveLoopback(host: String, port: Int, anyPort: Bool = false) throws -> SocketAddress {
        guard (1...65_535).contains(port) || (anyPort && port == 0) else {
            throw FaultProxyError.unresolvableUpstream(host: host, port: port, reason: "port out of range")
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Socket.streamType
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list else {
            throw FaultProxyError.unresolvableUpstream(
                host: host, port: port, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var candidates: [SocketAddress] = []
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            if let address = current.pointee.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: address, count: Int(current.pointee.ai_addrlen)))
                let candidate = SocketAddress(family: current.pointee.ai_family, bytes: bytes)
                if Socket.isLoopback(candidate) { candidates.append(candidate) }
            }
            entry = current.pointee.ai_next
        }
        guard let chosen = candidates.first(where: { $0.family == AF_INET }) ?? candidates.first else {
            throw FaultProxyError.upstreamNotLoopback(host: host)
        }
        return chosen
    }

    /// A listening socket on 127.0.0.1:0 and the port it got.
    private static func listenOnLoopback() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Socket.streamType, 0)
        guard fd >= 0 else { throw Socket.error("socket") }
        Socket.setCloseOnExec(fd)
        var address = sockaddr_in()
        #if canImport(Darwin)
        address.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        #endif
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            let failure = Socket.error(bound == 0 ? "listen" : "bind")
            close(fd)
            throw failure
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else {
            let failure = Socket.error("getsockname")
            close(fd)
            throw failure
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Thin wrappers over the POSIX calls, smoothing over Linux/Darwin differences.
    private enum Socket {
        static var streamType: Int32 {
            #if canImport(Glibc) || canImport(Musl)
            return Int32(SOCK_STREAM.rawValue)
            #else
            return SOCK_STREAM
            #endif
        }

        static func error(_ call: String) -> FaultProxyError {
            .socketFailed(call: call, reason: String(cString: strerror(errno)))
        }

        static func isLoopback(_ address: SocketAddress) -> Bool {
            address.bytes.withUnsafeBytes { raw in
                if address.family == AF_INET, raw.count >= MemoryLayout<sockaddr_in>.size {
                    let v4 = raw.loadUnaligned(as: sockaddr_in.self)
                    return UInt32(bigEndian: v4.sin_addr.s_addr) >> 24 == 127
                }
                if address.family == AF_INET6, raw.count >= MemoryLayout<sockaddr_in6>.size {
                    var v6 = raw.loadUnaligned(as: sockaddr_in6.self)
                    return withUnsafeBytes(of: &v6.sin6_addr) { Array($0) } == Array(repeating: 0, count: 15) + [1]
                }
                return false
            }
        }

        static func setCloseOnExec(_ fd: Int32) {
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }

        /// An accepted socket marked close-on-exec (`accept4` is not visible from Swift's
        /// Glibc module; the short window before `fcntl` does not matter for children
        /// started with Foundation's `Process`, which closes inherited descriptors).
        static func accept(_ listener: Int32) -> Int32 {
            let fd = Glue.accept(listener)
            if fd >= 0 { setCloseOnExec(fd) }
            return fd
        }

        /// TCP_NODELAY (small writes go out at once) and, on Darwin, no SIGPIPE.
        static func configure(_ fd: Int32) {
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            #if canImport(Darwin)
            _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
            #endif
        }

        /// A connected socket, or -1. Gives up after `timeout` seconds or once `cancelled()`.
        static func connect(to address: SocketAddress, from source: SocketAddress?, timeout: Double,
                            cancelled: () -> Bool) -> Int32 {
            let fd = socket(address.family, streamType, 0)
            guard fd >= 0 else { return -1 }
            setCloseOnExec(fd)
            configure(fd)
            if let source {
                let bound = source.bytes.withUnsafeBytes {
                    bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(source.bytes.count))
                }
                guard bound == 0 else { close(fd); return -1 }
            }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: address.bytes) }
            let started = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glue.connect(fd, $0, socklen_t(address.bytes.count))
                }
            }
            var connected = started == 0
            if !connected && errno == EINPROGRESS {
                let deadline = Date() + timeout
                while Date() < deadline && !cancelled() {
                    var pollDescriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    guard poll(&pollDescriptor, 1, 100) > 0 else { continue }
                    var failure: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length)
                    connected = failure == 0
                    break
                }
            }
            guard connected else {
                close(fd)
                return -1
            }
            _ = fcntl(fd, F_SETFL, flags)
            return fd
        }

        /// Sends all of `bytes`; false on error (including the peer or a cut shutting it down).
        static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
            var offset = 0
            while offset < bytes.count {
                #if canImport(Darwin)
                let flags: Int32 = 0
                #else
                let flags = Int32(MSG_NOSIGNAL)
                #endif
                let sent = send(fd, bytes.baseAddress! + offset, bytes.count - offset, flags)
                if sent < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += sent
            }
            return true
        }
    }

    /// The POSIX calls whose names `Socket`'s own methods shadow.
    private enum Glue {
        static func accept(_ listener: Int32) -> Int32 {
            #if canImport(Glibc)
            return Glibc.accept(listener, nil, nil)
            #elseif canImport(Musl)
            return Musl.accept(listener, nil, nil)
            #else
            return Darwin.accept(listener, nil, nil)
            #endif
        }

        static func connect(_ fd: Int32, _ address: UnsafePointer<sockaddr>?, _ length: socklen_t) -> Int32 {
            #if canImport(Glibc)
            return Glibc.connect(fd, address, length)
            #elseif canImport(Musl)
            return Musl.connect(fd, address, length)
            #else
            return Darwin.connect(fd, address, length)
            #endif
        }
    }
}
