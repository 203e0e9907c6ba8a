// Test support: running child processes, long-running server processes and
// loopback port helpers. Foundation only; used by the git test servers.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors thrown by the process and server helpers. The descriptions carry the
/// child's stderr / the server's log so failures explain themselves.
enum TestProcessError: Error, CustomStringConvertible {
    case launchFailed(command: String, underlying: String)
    case nonZeroExit(command: String, status: Int32, stdout: String, stderr: String)
    case timedOut(command: String, seconds: Double)
    case serverFailedToStart(server: String, reason: String, log: String)

    var description: String {
        switch self {
        case let .launchFailed(command, underlying):
            return "failed to launch `\(command)`: \(underlying)"
        case let .nonZeroExit(command, status, stdout, stderr):
            return "`\(command)` exited with status \(status)\nstderr:\n\(stderr)\nstdout:\n\(stdout)"
        case let .timedOut(command, seconds):
            return "`\(command)` did not finish within \(seconds)s"
        case let .serverFailedToStart(server, reason, log):
            return "\(server) failed to start: \(reason)\n--- server log ---\n\(log)\n--- end of log ---"
        }
    }
}

/// The captured result of a finished child process.
struct ProcessOutput: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Environment of this process with `overrides` applied; keys mapped to `nil`
/// are removed. Inherited `GIT_*` variables are always dropped so the caller's
/// shell (or a git hook running the tests) cannot leak into the children.
func testEnvironment(_ overrides: [String: String?] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GIT_") }
    for (key, value) in overrides { env[key] = value }
    return env
}

/// Starts Foundation `Process`es safely for tests. Use it (or `runProcess`)
/// for every child a test starts while servers may be running.
///
/// Works around two swift-corelibs-foundation `Process` problems on Linux:
/// 1. The child inherits the *calling thread's* signal mask, and Swift
///    concurrency / Dispatch worker threads block almost every signal
///    (swift-corelibs-foundation#4772). Servers would ignore SIGTERM and sshd
///    sessions hang forever waiting for SIGCHLD. So `run()` is called on a
///    fresh thread whose mask is empty.
/// 2. `run()` detects the child's exit through an inherited socketpair end and
///    closes the parent's other descriptors by listing /proc/self/fd first; a
///    socketpair created by a *concurrent* `run()` leaks into the child. If that
///    child is a long-lived server, the other process's exit is not noticed
///    until the server stops (`waitUntilExit`/`terminationHandler` hang). So all
///    launches are serialized by one process-wide lock.
enum TestProcessLauncher {
    private static let lock = NSLock()

    static func run(_ process: Process) throws {
        final class Box: @unchecked Sendable {
            let process: Process
            var error: Error?
            init(_ process: Process) { self.process = process }
        }
        let box = Box(process)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var empty = sigset_t()
            sigemptyset(&empty)
            pthread_sigmask(SIG_SETMASK, &empty, nil)
            lock.withLock {
                do { try box.process.run() } catch { box.error = error }
            }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = box.error { throw error }
    }
}

/// Run `executable` with `arguments` to completion (bounded by `timeout`) and
/// return its output. stdout/stderr go to temporary files, not pipes, so
/// grandchildren that keep a descriptor open (e.g. `git gc --auto`) can never
/// make this hang. Throws `nonZeroExit` unless `allowFailure` is set.
@discardableResult
func runProcess(
    _ executable: String,
    _ arguments: [String],
    in directory: URL? = nil,
    environment: [String: String]? = nil,
    timeout: Double = 60,
    allowFailure: Bool = false
) throws -> ProcessOutput {
    let command = ([executable] + arguments).joined(separator: " ")
    let scratch = FileManager.default.temporaryDirectory
        .appendingPathComponent("testprocess-\(UUID().uuidString)")
    let outURL = scratch.appendingPathExtension("out")
    let errURL = scratch.appendingPathExtension("err")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let outHandle = try FileHandle(forWritingTo: outURL)
    let errHandle = try FileHandle(forWritingTo: errURL)
    defer {
        try? outHandle.close()
        try? errHandle.close()
    }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    process.environment = environment ?? testEnvironment()
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = outHandle
    process.standardError = errHandle
    let exited = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in exited.signal() }
    do {
        try TestProcessLauncher.run(process)
    } catch {
        throw TestProcessError.launchFailed(command: command, underlying: "\(error)")
    }
    if exited.wait(timeout: .now() + timeout) == .timedOut {
        kill(-process.processIdentifier, SIGKILL)  // its own process group
        _ = exited.wait(timeout: .now() + 5)
        throw TestProcessError.timedOut(command: command, seconds: timeout)
    }
    let output = ProcessOutput(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    )
    if output.status != 0 && !allowFailure {
        throw TestProcessError.nonZeroExit(
            command: command, status: output.status, stdout: output.stdout, stderr: output.stderr)
    }
    return output
}

/// A long-running child (a server) whose stdout and stderr are appended to
/// `logFile`. `stop()` sends SIGTERM to its whole process group, waits,
/// escalates to SIGKILL; idempotent.
///
/// The server runs under a small `/bin/sh` supervisor (`supervisorScript`)
/// that forwards SIGTERM to it, stops it if the test process dies, and exits
/// only after the server has exited, so when `stop()` returns the server is
/// gone and its directory can be deleted.
/// Why a supervisor at all: Foundation's `Process` notices a child's exit when
/// the child's copy of a private socketpair closes, and then calls a
/// *blocking* `waitpid` on its single manager thread. sshd closes every
/// inherited descriptor at startup, so without the shell Foundation would
/// block in `waitpid(sshd)` and stop noticing *any* process exit in the test
/// process until sshd ends. `Process` starts the child in a new process group;
/// `stop()` signals the whole group (`-pid`), reaching the server's children
/// (git-daemon's upload-packs, lighttpd's CGIs) too.
final class BackgroundProcess: @unchecked Sendable {
    let name: String
    let logFile: URL
    let pid: Int32
    private let process: Process
    private let logHandle: FileHandle

    /// `sh -c <script> sh <server> <args...>`: run the server; on TERM/INT/HUP
    /// forward SIGTERM to it; if the test process disappears (crash, kill -9),
    /// stop the server within ~1 s; exit as soon as the server has exited (the
    /// CHLD trap interrupts `wait`), with the server's status.
    static let supervisorScript = """
        trap 'kill -TERM "$child" 2>/dev/null; stop=1' TERM INT HUP
        trap ':' CHLD
        "$@" &
        child=$! delay=0.05
        while [ -z "$stop" ] && kill -0 "$child" 2>/dev/null; do
          kill -0 "$PPID" 2>/dev/null || { kill -TERM "$child" 2>/dev/null; break; }
          sleep "$delay" <&- & sleeper=$!
          wait "$sleeper"
          kill "$sleeper" 2>/dev/null
          case "$delay" in 0.05) delay=0.2 ;; 0.2) delay=1 ;; esac
        done
        wait "$child"
        """
    private let exited = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var hasExited = false
    private var stopped = false

    init(name: String, executable: String, arguments: [String], logFile: URL,
         environment: [String: String]? = nil, in directory: URL? = nil) throws {
        self.name = name
        self.logFile = logFile
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        logHandle = try FileHandle(forWritingTo: logFile)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", Self.supervisorScript, "sh", executable] + arguments
        if let directory { process.currentDirectoryURL = directory }
        process.environment = environment ?? testEnvironment()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.terminationHandler = { [exited] _ in exited.signal() }
        do {
            try TestProcessLauncher.run(process)
        } catch {
            try? logHandle.close()
            throw TestProcessError.launchFailed(
                command: ([executable] + arguments).joined(separator: " "), underlying: "\(error)")
        }
        pid = process.processIdentifier
    }

    /// Whether the process is still running.
    var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !checkExitedLocked()
    }

    /// Consumes the (single) termination signal at most once. Call with `lock` held.
    private func checkExitedLocked() -> Bool {
        if !hasExited && exited.wait(timeout: .now()) == .success { hasExited = true }
        return hasExited
    }

    /// Everything the process has written to stdout/stderr so far.
    func log() -> String {
        (try? String(contentsOf: logFile, encoding: .utf8)) ?? "<no log at \(logFile.path)>"
    }

    /// SIGTERM, wait up to `grace` seconds, then SIGKILL and wait. Idempotent.
    func stop(grace: Double = 5) {
        lock.lock()
        if stopped { lock.unlock(); return }
        stopped = true
        let alreadyExited = checkExitedLocked()
        lock.unlock()
        if !alreadyExited {
            kill(-pid, SIGTERM)  // the process group: shell + server (+ its children)
            if exited.wait(timeout: .now() + grace) == .timedOut {
                kill(-pid, SIGKILL)
                _ = exited.wait(timeout: .now() + 10)
            }
            lock.lock()
            hasExited = true
            lock.unlock()
        }
        try? logHandle.close()
    }
}

/// Loopback TCP helpers.
enum LoopbackPort {
    /// A currently free TCP port on 127.0.0.1, found by binding port 0 and
    /// closing the socket again. Racy by nature; servers retry on EADDRINUSE.
    static func free() throws -> Int {
        let fd = socket(AF_INET, streamType, 0)
        guard fd >= 0 else { throw posixError("socket") }
        defer { close(fd) }
        var addr = loopbackAddress(port: 0)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw posixError("bind") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw posixError("getsockname") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    static func isAccepting(_ port: Int) -> Bool {
        let fd = socket(AF_INET, streamType, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = loopbackAddress(port: port)
        let result = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return result == 0
    }

    /// Poll until `process` accepts connections on `port`. Throws (with the
    /// server log) if it exits first or `timeout` passes.
    static func waitUntilAccepting(_ port: Int, process: BackgroundProcess, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !process.isRunning {
                throw TestProcessError.serverFailedToStart(
                    server: process.name, reason: "process exited before listening on port \(port)",
                    log: process.log())
            }
            if isAccepting(port) {
                // A port collision could make *another* listener answer while our
                // server dies on EADDRINUSE: confirm the server is still alive.
                usleep(20_000)
                if process.isRunning { return }
                continue
            }
            usleep(20_000)
        }
        throw TestProcessError.serverFailedToStart(
            server: process.name, reason: "not accepting connections on 127.0.0.1:\(port) after \(timeout)s",
            log: process.log())
    }

    /// SOCK_CLOEXEC so these sockets never leak into concurrently spawned children
    /// (a leaked probe connection would hold a server slot open).
    private static var streamType: Int32 {
        #if canImport(Glibc)
        return Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        #else
        return SOCK_STREAM
        #endif
    }

    private static func loopbackAddress(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        #if canImport(Darwin)
        addr.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        #endif
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        return addr
    }

    private static func posixError(_ call: String) -> Error {
        NSError(domain: NSPOSIXErrorDomain, code: Int(errno),
                userInfo: [NSLocalizedDescriptionKey: "\(call): \(String(cString: strerror(errno)))"])
    }
}

/// Launch a server on a fresh free port, wait until it accepts connections,
/// and retry (up to `attempts` times) when the port was taken in the meantime.
/// `launch` receives the port and returns the started process.
func startServer(
    name: String, attempts: Int = 3, timeout: Double = 10,
    launch: (Int) throws -> BackgroundProcess
) throws -> (port: Int, process: BackgroundProcess) {
    var lastError: Error?
    for _ in 0..<attempts {
        let port = try LoopbackPort.free()
        let process = try launch(port)
        do {
            try LoopbackPort.waitUntilAccepting(port, process: process, timeout: timeout)
            return (port, process)
        } catch {
            process.stop()
            lastError = error
            let log = process.log().lowercased()
            let portTaken = log.contains("address already in use") || log.contains("cannot bind")
            if !portTaken { break }
        }
    }
    throw lastError ?? TestProcessError.serverFailedToStart(server: name, reason: "unknown", log: "")
}
