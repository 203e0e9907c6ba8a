// Test support: plain TCP connections on loopback for what curl cannot do — hold many
// connections idle, trickle request headers, send a thousand requests on one keep-alive
// connection, connect from a chosen source address (127.0.0.2) — and /proc readings of a
// server process (descriptors, RSS).

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One TCP connection to `127.0.0.1:port` (optionally from another loopback address).
/// Not thread-safe: one test thread drives it.
final class RawConnection {
    enum Read: Equatable {
        case data(Data)
        /// The peer closed (EOF) or reset the connection.
        case closed
        case timedOut
    }

    struct Response {
        var status: Int
        /// Header names lowercased.
        var headers: [String: String]
        var body: Data
    }

    private(set) var fd: Int32
    private var buffered = Data()

    /// Connects; `source` binds the local end first (e.g. "127.0.0.2").
    init(port: Int, host: String = "127.0.0.1", from source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Self.failure("socket") }
        if let source {
            var local = try Self.address(source, port: 0)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { let error = Self.failure("bind \(source)"); Glibc.close(fd); throw error }
        }
        var remote = try Self.address(host, port: port)
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { let error = Self.failure("connect \(host):\(port)"); Glibc.close(fd); throw error }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Sends all of `text`; false once the peer has closed or reset the connection.
    @discardableResult
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 { if errno == EINTR { continue }; return false }
            offset += sent
        }
        return true
    }

    /// What arrives within `timeout` seconds (whatever one read returns).
    func receive(timeout: Double) -> Read {
        if !buffered.isEmpty { defer { buffered = Data() }; return .data(buffered) }
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(timeout * 1000)) > 0 else { return .timedOut }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = recv(fd, &chunk, chunk.count, 0)
        return count > 0 ? .data(Data(chunk[0..<count])) : .closed
    }

    /// Whether the peer closes the connection within `timeout` seconds (data before the
    /// close is read and dropped).
    func closesWithin(_ timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            switch receive(timeout: max(0.01, deadline.timeIntervalSinceNow)) {
            case .closed: return true
            case .data: continue
            case .timedOut: return false
            }
        }
        return false
    }

    /// Reads one HTTP/1.1 response (with `Content-Length`, or none and no body for 1xx/204/304
    /// or when the server closes); nil on timeout or a close before a full head.
    func readResponse(timeout: Double = 10) -> Response? {
        let deadline = Date().addingTimeInterval(timeout)
        let separator = Data("\r\n\r\n".utf8)
        var data = buffered
        buffered = Data()
        func more() -> Bool {
            guard case .data(let chunk) = receive(timeout: max(0.01, deadline.timeIntervalSinceNow)) else { return false }
            data.append(chunk)
            return true
        }
        while data.range(of: separator) == nil { guard more() else { return nil } }
        let headEnd = data.range(of: separator)!
        let lines = String(decoding: data[..<headEnd.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        var body = Data(data[headEnd.upperBound...])
        while body.count < length {
            guard case .data(let chunk) = receive(timeout: max(0.01, deadline.timeIntervalSinceNow)) else { return nil }
            body.append(chunk)
        }
        buffered = body.count > length ? Data(body[length...]) : Data()
        return Response(status: status, headers: headers, body: Data(body.prefix(length)))
    }

    /// One request on this connection and its response.
    func exchange(_ method: String, _ path: String, headers: [String] = [], body: String = "", timeout: Double = 10) -> Response? {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for header in headers { request += header + "\r\n" }
        if !body.isEmpty || method == "POST" { request += "Content-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + body
        guard send(request) else { return nil }
        return readResponse(timeout: timeout)
    }

    /// One GET on a fresh connection.
    static func get(port: Int, _ path: String, from source: String? = nil) -> Response? {
        (try? RawConnection(port: port, from: source))?.exchange("GET", path)
    }

    private static func address(_ host: String, port: Int) throws -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw failure("inet_pton \(host)") }
        return address
    }

    private static func failure(_ call: String) -> Error {
        NSError(domain: NSPOSIXErrorDomain, code: Int(errno),
                userInfo: [NSLocalizedDescriptionKey: "\(call): \(String(cString: strerror(errno)))"])
    }
}

/// Readings of a running server from /proc (Linux).
struct ProcessReadings: CustomStringConvertible {
    var descriptors: Int
    var rssKiB: Int

    /// The server under a `BackgroundProcess` (its supervisor shell's only child).
    static func serverPID(of process: BackgroundProcess) -> Int32? {
        let children = (try? String(contentsOfFile: "/proc/\(process.pid)/task/\(process.pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").first.flatMap { Int32($0) }
    }

    static func read(_ pid: Int32) -> ProcessReadings {
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } } ?? -1
        return ProcessReadings(descriptors: descriptors, rssKiB: rss)
    }

    /// The soft and hard `Max open files` of a process.
    static func openFileLimits(_ pid: Int32) -> (soft: String, hard: String)? {
        let limits = (try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)) ?? ""
        guard let line = limits.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") }) else { return nil }
        let fields = line.dropFirst("Max open files".count).split(separator: " ")
        return fields.count >= 2 ? (String(fields[0]), String(fields[1])) : nil
    }

    var description: String { "\(descriptors) fds, \(rssKiB / 1024) MiB RSS" }
}
