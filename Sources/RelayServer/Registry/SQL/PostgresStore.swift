import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// The registry in PostgreSQL, shared by every relay replica (relay.yaml `database.postgres`).
///
/// Each read or write checks a connection out of a small pool and runs its body on a thread
/// of this store's own thread pool, where the statements wait for PostgreSQL (postgres-nio's
/// future API; the event loops never block). The registry's code is synchronous by design
/// (`SQLConnection`), like GRDB's, so the same statements serve SQLite and PostgreSQL.
/// A connection that breaks (PostgreSQL restarted) is dropped; the next call opens a new one.
public final class PostgresStore: SQLStore {
    public struct Settings: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var database: String
        public var user: String
        public var password: String?
        /// PEM file of the CA that signed the server's certificate; nil: no TLS.
        public var caFile: String?
        /// Connections (and threads) per replica.
        public var poolSize: Int

        public init(host: String, port: Int = 5432, database: String, user: String, password: String? = nil,
                    caFile: String? = nil, poolSize: Int = 4) {
            self.host = host
            self.port = port
            self.database = database
            self.user = user
            self.password = password
            self.caFile = caFile
            self.poolSize = poolSize
        }
    }

    public let dialect = SQLDialect.postgres
    public let location: String
    let settings: Settings
    private let configuration: PostgresConnection.Configuration
    private let threads: NIOThreadPool
    private let pool: ConnectionPool
    private let logger: Logger

    /// Connects, and brings the schema up to date (safe when several replicas start together).
    public static func open(_ settings: Settings, logger: Logger) async throws -> PostgresStore {
        let store = try PostgresStore(settings, logger: logger)
        do {
            try await store.migrate()
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    private init(_ settings: Settings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        location = "PostgreSQL \(settings.user)@\(settings.host):\(settings.port)/\(settings.database)"
        let tls: PostgresConnection.Configuration.TLS
        if let caFile = settings.caFile {
            var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
            tlsConfiguration.trustRoots = .file(caFile)
            tls = .require(try NIOSSLContext(configuration: tlsConfiguration))
        } else {
            tls = .disable
        }
        var configuration = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                             password: settings.password, database: settings.database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        // The server ends what hangs on its side (a statement, a transaction left open); the
        // client deadline in PostgresSQLConnection covers a link that went silent.
        configuration.options.additionalStartupParameters = [
            ("application_name", "relay-server"),
            ("statement_timeout", "\(Int(PostgresSQLConnection.deadline.components.seconds) * 1000)"),
            ("idle_in_transaction_session_timeout", "60000"),
        ]
        self.configuration = configuration
        threads = NIOThreadPool(numberOfThreads: max(1, settings.poolSize))
        threads.start()
        pool = ConnectionPool(capacity: max(1, settings.poolSize))
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        try await transaction(begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    public func write<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        // Read committed, whatever the server's default: the feed's append lock relies on it.
        try await transaction(begin: "BEGIN ISOLATION LEVEL READ COMMITTED", body)
    }

    /// A connection outside the pool (the caller closes it): LISTEN needs one of its own.
    func dedicatedConnection() async throws -> PostgresConnection {
        try await PostgresConnection.connect(configuration: configuration, id: Int.random(in: 1...Int.max), logger: logger)
    }

    /// Runs `body` holding PostgreSQL advisory lock `key` for the session: one replica at a
    /// time, and the lock goes with a replica that dies (its connection closes). Waits for the
    /// lock, polling, on a connection of its own (outside the pool, so a long hold never
    /// starves the registry's reads and writes).
    func withSessionLock<T: Sendable>(_ key: Int64, _ body: () async throws -> T) async throws -> T {
        let connection: PostgresConnection
        do { connection = try await dedicatedConnection() } catch { throw PostgresStoreError.unreachable(location: location, error: error) }
        do {
            while true {
                let rows = try await connection.query(PostgresQuery(unsafeSQL: "SELECT pg_try_advisory_lock(\(key))"), logger: logger)
                var acquired = false
                for try await (value) in rows.decode(Bool.self) { acquired = value }
                if acquired { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let result = try await body()
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// Checks a connection out, runs `body` in a transaction on a pool thread, checks it in.
    private func transaction<T: Sendable>(begin: String, _ body: @escaping @Sendable (PostgresSQLConnection) throws -> T) async throws -> T {
        let connection = try await checkOut()
        let sql = PostgresSQLConnection(connection, logger: logger)
        do {
            let result = try await threads.runIfActive {
                try sql.execute(sql: begin)
                do {
                    let result = try body(sql)
                    // An aborted transaction answers COMMIT with ROLLBACK, not an error.
                    guard try sql.commit() else { throw PostgresStoreError.rolledBack(location: self.location) }
                    return result
                } catch {
                    if !connection.isClosed { _ = try? sql.execute(sql: "ROLLBACK") }
                    throw error
                }
            }
            pool.checkIn(connection)
            return result
        } catch {
            pool.checkIn(connection)
            throw error
        }
    }

    private func checkOut() async throws -> PostgresConnection {
        switch await pool.checkOut() {
        case .idle(let connection):
            return connection
        case .open:
            do {
                return try await PostgresConnection.connect(configuration: configuration, id: Int.random(in: 1...Int.max), logger: logger)
            } catch {
                pool.openFailed()
                throw PostgresStoreError.unreachable(location: location, error: error)
            }
        case .closed:
            throw PostgresStoreError.closed(location: location)
        }
    }

    private func migrate() async throws {
        try await transaction(begin: "BEGIN ISOLATION LEVEL READ COMMITTED") { db in
            try db.lockForTransaction(PostgresSchema.migrationLock)
            try db.script("CREATE TABLE IF NOT EXISTS relay_schema_migration (version TEXT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
            let applied = Set(try String.fetchAll(db, sql: "SELECT version FROM relay_schema_migration"))
            let known = Set(PostgresSchema.migrations.map(\.version))
            if let unknown = applied.subtracting(known).sorted().first {
                throw PostgresStoreError.newerSchema(location: self.location, version: unknown)
            }
            for migration in PostgresSchema.migrations where !applied.contains(migration.version) {
                try db.script(migration.sql)
                try db.execute(sql: "INSERT INTO relay_schema_migration(version, applied_ms) VALUES (?, ?)",
                               arguments: [migration.version, Registry.milliseconds(Date())])
            }
        }
    }

    public func close() async {
        for connection in pool.closeAll() { try? await connection.close() }
        try? await threads.shutdownGracefully()
    }

    /// A store dropped without `close()` (a command that ends) still closes its connections
    /// and threads.
    deinit {
        // Each connection is kept until its close completes (postgres-nio checks that a
        // connection is closed before it goes).
        for connection in pool.closeAll() { connection.close().whenComplete { _ in withExtendedLifetime(connection) {} } }
        threads.shutdownGracefully { _ in }
    }
}

public enum PostgresStoreError: Error, CustomStringConvertible {
    case unreachable(location: String, error: any Error)
    case newerSchema(location: String, version: String)
    case rolledBack(location: String)
    case closed(location: String)

    public var description: String {
        switch self {
        case .unreachable(let location, let error):
            "cannot connect to \(location): \(String(reflecting: error)); check that PostgreSQL runs and that relay.yaml database.postgres (host, port, user, passwordFile) is right"
        case .newerSchema(let location, let version):
            "\(location) holds registry schema \(version), newer than this relay-server knows: upgrade this replica to the version the others run"
        case .closed(let location):
            "the registry on \(location) is closed (the relay is stopping)"
        case .rolledBack(let location):
            "\(location) rolled the transaction back instead of committing it; nothing of it was stored, the caller retries"
        }
    }
}

/// A PostgreSQL connection as a `SQLConnection`: `?` placeholders become `$1…`, and each
/// statement waits for its result on the calling thread (a thread of `PostgresStore`'s pool).
final class PostgresSQLConnection: SQLConnection, @unchecked Sendable {  // used by one thread at a time (its transaction)
    let connection: PostgresConnection
    let logger: Logger
    let dialect = SQLDialect.postgres
    private var savepoints = 0

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    func execute(sql: String, arguments: SQLArguments) throws -> Int {
        let result = try run(sql, arguments)
        return result.metadata.rows ?? 0
    }

    /// COMMIT; false when the server rolled back instead (the transaction had failed).
    func commit() throws -> Bool {
        try run("COMMIT", []).metadata.command == "COMMIT"
    }

    /// How long one statement may take before the connection is given up (closed: the
    /// statement fails, the pool opens a new connection next time). Also the server-side
    /// `statement_timeout`.
    static let deadline: Duration = .seconds(30)

    func forEachRow(sql: String, arguments: SQLArguments, _ body: (SQLRow) throws -> Bool) throws {
        let result = try run(sql, arguments)
        guard let first = result.rows.first else { return }
        let columns = SQLColumns(first.map(\.columnName))
        for row in result.rows {
            guard try body(SQLRow(columns: columns, values: row.map(Self.value))) else { return }
        }
    }

    func inSavepoint(_ body: () throws -> Void) throws {
        savepoints += 1
        let name = "relay_\(savepoints)"
        defer { savepoints -= 1 }
        try execute(sql: "SAVEPOINT \(name)")
        do {
            try body()
            try execute(sql: "RELEASE SAVEPOINT \(name)")
        } catch {
            if !connection.isClosed { _ = try? execute(sql: "ROLLBACK TO SAVEPOINT \(name)") }
            throw error
        }
    }

    /// Several statements in one string (schema migrations), run one by one: the extended
    /// protocol postgres-nio speaks takes one statement at a time.
    func script(_ sql: String) throws {
        for statement in Self.statements(sql) { try execute(sql: statement) }
    }

    /// Splits a script at lines that end in `;`, outside `$$` function bodies; drops `--` lines.
    static func statements(_ script: String) -> [String] {
        var statements: [String] = []
        var current: [Substring] = []
        var inBody = false
        for line in script.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if !inBody && (trimmed.hasPrefix("--") || trimmed.isEmpty) { continue }
            current.append(line)
            if line.components(separatedBy: "$$").count % 2 == 0 { inBody.toggle() }
            if !inBody && trimmed.hasSuffix(";") {
                statements.append(current.joined(separator: "\n"))
                current.removeAll()
            }
        }
        let rest = current.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        if !rest.isEmpty { statements.append(rest) }
        return statements
    }

    private func run(_ sql: String, _ arguments: SQLArguments) throws -> PostgresQueryResult {
        var binds = PostgresBindings(capacity: arguments.values.count)
        for value in arguments.values {
            switch value {
            case .null: binds.appendNull()
            case .integer(let number): binds.append(number)
            case .real(let number): binds.append(number)
            // PostgreSQL's text cannot hold U+0000 (SQLite's can): an agent's string with one
            // would fail its whole batch, again at every retry.
            case .text(let text): binds.append(text.contains("\u{0}") ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text)
            case .blob(let data): binds.append(ByteBuffer(bytes: data))
            }
        }
        let query = PostgresQuery(unsafeSQL: Self.numbered(sql), binds: binds)
        let connection = self.connection
        let deadline = connection.eventLoop.scheduleTask(in: .seconds(Self.deadline.components.seconds + 5)) {
            connection.close().whenComplete { _ in }
        }
        defer { deadline.cancel() }
        return try connection.query(query, logger: logger).wait()
    }

    /// `?` placeholders as PostgreSQL's `$1, $2, …` (a `?` inside quotes is left alone).
    static func numbered(_ sql: String) -> String {
        guard sql.contains("?") else { return sql }
        var result = ""
        result.reserveCapacity(sql.utf8.count + 16)
        var index = 0
        var quote: Character?
        for character in sql {
            if let open = quote {
                if character == open { quote = nil }
                result.append(character)
            } else if character == "'" || character == "\"" {
                quote = character
                result.append(character)
            } else if character == "?" {
                index += 1
                result += "$\(index)"
            } else {
                result.append(character)
            }
        }
        return result
    }

    static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int8, .int4, .int2:
            return .integer(try cell.decode(Int64.self))
        case .bool:
            return .integer(try cell.decode(Bool.self) ? 1 : 0)
        case .float4, .float8:
            return .real(try cell.decode(Double.self))
        case .bytea:
            return .blob(Data(try cell.decode(ByteBuffer.self).readableBytesView))
        case .numeric:
            let number = NSDecimalNumber(decimal: try cell.decode(Decimal.self)).doubleValue
            if let integer = Int64(exactly: number) { return .integer(integer) }
            return .real(number)
        default:
            return .text(try cell.decode(String.self))
        }
    }
}

/// At most `capacity` open connections; callers beyond it wait their turn (FIFO).
final class ConnectionPool: Sendable {
    enum Grant: Sendable {
        case idle(PostgresConnection)
        /// Room for a new connection: open it, or call `openFailed`.
        case open
        /// The store was closed.
        case closed
    }

    private struct State {
        var idle: [PostgresConnection] = []
        var open = 0
        var waiters: [CheckedContinuation<Grant, Never>] = []
        var closed = false
    }
    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = capacity }

    func checkOut() async -> Grant {
        await withCheckedContinuation { (waiter: CheckedContinuation<Grant, Never>) in
            let grant = state.withLock { state -> Grant? in
                if state.closed { return .closed }
                while let connection = state.idle.popLast() {
                    if !connection.isClosed { return .idle(connection) }
                    state.open -= 1
                }
                if state.open < capacity {
                    state.open += 1
                    return .open
                }
                state.waiters.append(waiter)
                return nil
            }
            if let grant { waiter.resume(returning: grant) }
        }
    }

    func checkIn(_ connection: PostgresConnection) {
        let (handoff, drop) = state.withLock { state -> ((CheckedContinuation<Grant, Never>, Grant)?, Bool) in
            if state.closed {
                state.open -= 1
                return (nil, true)
            }
            let usable = !connection.isClosed
            if !state.waiters.isEmpty {
                let waiter = state.waiters.removeFirst()
                // A broken connection's slot goes to the waiter, who opens a new one.
                return ((waiter, usable ? .idle(connection) : .open), false)
            }
            if usable { state.idle.append(connection) } else { state.open -= 1 }
            return (nil, false)
        }
        if drop, !connection.isClosed { connection.close().whenComplete { _ in withExtendedLifetime(connection) {} } }
        if let (waiter, grant) = handoff { waiter.resume(returning: grant) }
    }

    func openFailed() {
        let waiter = state.withLock { state -> CheckedContinuation<Grant, Never>? in
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.open -= 1
            return nil
        }
        waiter?.resume(returning: .open)
    }

    /// Closes the pool: idle connections are returned to be closed, waiters are told, and
    /// connections checked out now are closed when they come back.
    func closeAll() -> [PostgresConnection] {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            state.open -= state.idle.count
            defer {
                state.idle.removeAll()
                state.waiters.removeAll()
            }
            return (state.idle, state.waiters)
        }
        for waiter in waiters { waiter.resume(returning: .closed) }
        return idle
    }
}
