import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for tests (Debian's `postgresql` package, installed by
/// scripts/setup.sh): its own cluster in a temporary directory (initdb), TCP on 127.0.0.1 at a
/// free port, its Unix socket in that directory as well, superuser and database `relay`, trust
/// authentication on loopback. PostgreSQL refuses to run as root: under root (CI) every
/// server binary runs as the `postgres` system user (runuser), which owns the directory.
final class PostgresServer: @unchecked Sendable {
    let dir: TemporaryDirectory
    let port: Int
    let user = "relay"
    let database = "relay"
    private(set) var process: BackgroundProcess?
    private var starts = 0

    /// `/usr/lib/postgresql/<newest>/bin`, where Debian keeps the server binaries.
    static let binDirectory: String? = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { "\(root)/\($0)/bin" }
    }()

    static func binary(_ name: String) throws -> String {
        guard let bin = binDirectory, FileManager.default.isExecutableFile(atPath: "\(bin)/\(name)") else {
            throw TestProcessError.launchFailed(command: name, underlying: "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: run scripts/setup.sh (Debian's postgresql)")
        }
        return "\(bin)/\(name)"
    }

    private static var asRoot: Bool { getuid() == 0 }

    /// The command line for a server binary: as the postgres user under root.
    private static func command(_ name: String, _ arguments: [String]) throws -> (String, [String]) {
        let binary = try binary(name)
        return asRoot ? ("/usr/sbin/runuser", ["-u", "postgres", "--", binary] + arguments) : (binary, arguments)
    }

    var dataDirectory: URL { dir.appending("data") }

    /// initdb, then `start()`, then the `relay` database.
    init(prefix: String = "postgres") throws {
        dir = try TemporaryDirectory(prefix: prefix)
        port = try LoopbackPort.free()
        if Self.asRoot { _ = try runProcess("/bin/chown", ["-R", "postgres:postgres", dir.url.path]) }
        let (initdb, arguments) = try Self.command("initdb", ["-D", dataDirectory.path, "-U", user, "--auth=trust",
                                                              "--encoding=UTF8", "--locale=C", "--no-sync"])
        let output = try runProcess(initdb, arguments, timeout: 120, allowFailure: true)
        guard output.status == 0 else {
            throw TestProcessError.nonZeroExit(command: "initdb", status: output.status, stdout: output.stdout, stderr: output.stderr)
        }
        try start()
        _ = try sql("CREATE DATABASE \(database)", database: "postgres")
    }

    /// Starts the server on the existing cluster (after `kill9()` too) and waits until it
    /// accepts connections.
    func start() throws {
        // Right after `kill9()` the old server's background processes may still hold its
        // shared memory for a moment ("pre-existing shared memory block is still in use"):
        // such a start is tried again, for up to 10 s.
        let deadline = Date().addingTimeInterval(10)
        while true {
            do { return try startOnce() } catch let error as TestProcessError {
                guard case .serverFailedToStart(_, _, let log) = error, log.contains("pre-existing shared memory block")
                    || log.contains("lock file \"postmaster.pid\" already exists"), Date() < deadline else { throw error }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
    }

    private func startOnce() throws {
        starts += 1
        let (postgres, arguments) = try Self.command("postgres", [
            "-D", dataDirectory.path, "-h", "127.0.0.1", "-p", "\(port)", "-k", dir.url.path,
            "-c", "max_connections=200", "-c", "shared_buffers=16MB"])
        let process = try BackgroundProcess(name: "postgres", executable: postgres, arguments: arguments,
                                            logFile: dir.appending("postgres-\(starts).log"))
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            guard process.isRunning else {
                throw TestProcessError.serverFailedToStart(server: "postgres", reason: "exited", log: process.log())
            }
            let ready = try runProcess(try Self.binary("pg_isready"), ["-h", "127.0.0.1", "-p", "\(port)", "-U", user], timeout: 10, allowFailure: true)
            if ready.status == 0 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestProcessError.serverFailedToStart(server: "postgres", reason: "not accepting connections within 30 s", log: process.log())
    }

    /// kill -9 of the postmaster, as a crash; its backends end when they see it gone. Only the
    /// postmaster is killed, so its parent (runuser, or the supervisor shell) reaps it: a
    /// zombie postmaster left to init would still count as "running" for the lock file
    /// (postmaster.pid) until init got to it.
    func kill9() {
        guard let process else { return }
        self.process = nil
        let pidFile = dataDirectory.appendingPathComponent("postmaster.pid")
        let postmaster = (try? String(contentsOf: pidFile, encoding: .utf8))?.split(separator: "\n").first.flatMap { Int32($0) }
        if let postmaster {
            kill(postmaster, SIGKILL)
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, process.isRunning || kill(postmaster, 0) == 0 { Thread.sleep(forTimeInterval: 0.05) }
        } else {
            kill(-process.pid, SIGKILL)
        }
        process.stop(grace: 1)
    }

    /// A fast shutdown (SIGINT to the postmaster would be "fast"; SIGTERM is "smart" and waits
    /// for clients, so the group's SIGTERM is followed by SIGKILL after `grace`).
    func stop() {
        process?.stop(grace: 5)
        process = nil
    }

    func shutdown() {
        stop()
        dir.remove()
    }

    /// `psql -At` on loopback: rows one per line, columns separated by `|`.
    func sql(_ statements: String, database: String? = nil) throws -> String {
        let output = try runProcess(try Self.binary("psql"), [
            "-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", database ?? self.database,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", statements], timeout: 60, allowFailure: true)
        guard output.status == 0 else {
            throw TestProcessError.nonZeroExit(command: "psql -c \(statements)", status: output.status, stdout: output.stdout, stderr: output.stderr)
        }
        return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The server's log since its last start.
    var log: String { process?.log() ?? "" }

    /// A libpq-style URL for clients (no password: trust on loopback).
    var url: String { "postgres://\(user)@127.0.0.1:\(port)/\(database)" }
}
