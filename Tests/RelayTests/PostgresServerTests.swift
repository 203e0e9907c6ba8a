import Foundation
import Testing

/// The PostgreSQL the replica tests (#13) run against is real: Debian's server, started by the
/// test in its own directory on loopback. It keeps what it committed through a kill -9, which
/// the replica tests lean on when they restart it under running relays.
@Suite struct PostgresServerTests {
    @Test func aRealPostgreSQLOnLoopbackKeepsCommittedRowsThroughAKill() throws {
        let server = try PostgresServer(prefix: "postgres-fixture")
        defer { server.shutdown() }
        #expect(try server.sql("SHOW server_version_num").count >= 6)
        #expect(try server.sql("SELECT current_user || '@' || current_database()") == "relay@relay")
        _ = try server.sql("CREATE TABLE entry(agent text, seq bigint, PRIMARY KEY (agent, seq)); INSERT INTO entry VALUES ('edge', 1), ('edge', 2)")

        server.kill9()
        #expect(throws: (any Error).self) { try server.sql("SELECT 1") }
        try server.start()
        #expect(try server.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM entry") == "1,2")
        // Its constraints hold too: a duplicate (agent, seq) is refused, not stored twice.
        #expect(throws: (any Error).self) { try server.sql("INSERT INTO entry VALUES ('edge', 2)") }
        #expect(try server.sql("SELECT count(*) FROM entry") == "2")
    }
}
