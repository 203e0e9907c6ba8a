import Foundation
import RelayShared

/// relay.yaml `database:`: where the registry lives. Absent: SQLite in `<dataDir>/relay.sqlite`
/// (one relay). `postgres:`: one PostgreSQL shared by every replica.
public struct DatabaseSettings: Sendable, Decodable {
    public struct Postgres: Sendable, Decodable {
        /// `postgres://user@host:port/database` (no password: use `passwordFile`); or the fields below.
        public var url: String?
        public var host: String?
        public var port: Int?
        public var database: String?
        public var user: String?
        public var passwordFile: String?
        public var tls: TLS?
        /// Connections per replica (default 4).
        public var poolSize: Int?
    }

    public struct TLS: Sendable, Decodable {
        /// PEM file of the CA that signed PostgreSQL's certificate; TLS is required when set.
        public var caFile: String
    }

    public var postgres: Postgres?

    public init(postgres: Postgres? = nil) { self.postgres = postgres }

    /// The resolved store settings (nil: SQLite). Failures name the field.
    func resolve(fail: (String, String) -> ConfigError, secret: (String, String) throws(ConfigError) -> String,
                 readable: (String, String) throws(ConfigError) -> String) throws(ConfigError) -> PostgresStore.Settings? {
        guard let postgres else { return nil }
        var host = postgres.host, port = postgres.port, database = postgres.database, user = postgres.user
        if let url = postgres.url {
            guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
                  let urlHost = components.host, !urlHost.isEmpty else {
                throw fail("database.postgres.url", "must be postgres://USER@HOST[:PORT]/DATABASE")
            }
            guard components.password == nil else {
                throw fail("database.postgres.url", "must not hold a password: put it in a file and name it in database.postgres.passwordFile")
            }
            guard host == nil, port == nil, database == nil, user == nil else {
                throw fail("database.postgres.url", "give either url or host/port/database/user, not both")
            }
            host = urlHost
            port = components.port
            database = String(components.path.drop(while: { $0 == "/" }))
            user = components.user
        }
        guard let host, !host.isEmpty else { throw fail("database.postgres.host", "is required (or database.postgres.url)") }
        guard let database, !database.isEmpty else { throw fail("database.postgres.database", "is required (the database name)") }
        guard let user, !user.isEmpty else { throw fail("database.postgres.user", "is required") }
        let resolvedPort = port ?? 5432
        guard (1...65535).contains(resolvedPort) else { throw fail("database.postgres.port", "must be 1…65535") }
        let poolSize = postgres.poolSize ?? 4
        guard (1...64).contains(poolSize) else { throw fail("database.postgres.poolSize", "must be 1…64") }
        let password = try postgres.passwordFile.map { (file) throws(ConfigError) -> String in try secret(file, "database.postgres.passwordFile") }
        let caFile = try postgres.tls.map { (tls) throws(ConfigError) -> String in try readable(tls.caFile, "database.postgres.tls.caFile") }
        return PostgresStore.Settings(host: host, port: resolvedPort, database: database, user: user, password: password,
                                      caFile: caFile, poolSize: poolSize)
    }
}
