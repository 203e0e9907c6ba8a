import Foundation
import GRDB
import GRPCCore

/// A registry (SQLite) failure met while serving the tunnel, as the status an agent gets:
/// UNAVAILABLE (agents retry with backoff) with a message that names the cause and the fix,
/// and trailing metadata `relay-error: registry` so an agent can tell it from a network failure.
struct RegistryFailure {
    /// The registry's location (`Registry.location`): "relay.sqlite in <dataDir>", or the PostgreSQL.
    let directory: String

    func rpcError(_ error: any Error, while doing: String) -> RPCError {
        if let rpc = error as? RPCError { return rpc }
        let code = (error as? DatabaseError)?.resultCode
        func isOne(of codes: ResultCode...) -> Bool { code.map(codes.contains) ?? false }
        let cause: String
        if isOne(of: .SQLITE_FULL) {
            cause = "disk full — free space on that volume (or grow it)"
        } else if isOne(of: .SQLITE_READONLY, .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_AUTH) {
            cause = "not writable — check that the volume is mounted read-write and that the relay's user owns \(directory)"
        } else if isOne(of: .SQLITE_IOERR) {
            cause = "I/O error — check the disk (dmesg) and its free space"
        } else if isOne(of: .SQLITE_BUSY, .SQLITE_LOCKED) {
            cause = "the database is locked — is a second relay-server using this dataDir?"
        } else if isOne(of: .SQLITE_CORRUPT, .SQLITE_NOTADB) {
            cause = "relay.sqlite is damaged — restore it from a backup (README, Operations)"
        } else if let postgres = error as? PostgresStoreError {
            cause = postgres.description
        } else if code == nil, !(error is AgentAdminError) {
            // PostgreSQL: the server's own message (String(reflecting:) has its SQLSTATE).
            cause = "\(String(reflecting: error))"
        } else {
            cause = "\(error)"
        }
        return RPCError(code: .unavailable, message: "relay cannot \(doing) in its registry (\(directory)): \(cause); the agent retries",
                        metadata: ["relay-error": "registry"])
    }

    /// Runs a registry call; a failure becomes the UNAVAILABLE above.
    func run<T>(_ doing: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw rpcError(error, while: doing) }
    }
}
