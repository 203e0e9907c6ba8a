import Foundation
import Logging
import Synchronization
import Testing
@testable import RelayServer

/// The two registry stores, for suites that run the same tests against both.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// One real PostgreSQL for a whole suite (`.postgresServer` trait): started before its first
/// test, stopped after its last. Each test gets a database of its own (`RegistryUnderTest`).
struct PostgresServerTrait: SuiteTrait, TestScoping {
    @TaskLocal static var current: PostgresServer?

    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let server = try PostgresServer(prefix: "registry-suite-pg")
        defer { server.shutdown() }
        try await Self.$current.withValue(server) { try await function() }
    }
}

extension Trait where Self == PostgresServerTrait {
    /// A real PostgreSQL server shared by the suite's tests.
    static var postgresServer: Self { PostgresServerTrait() }
}

/// A registry on a fresh store of the given kind: SQLite in a temporary directory, or a new
/// database on the suite's PostgreSQL.
final class RegistryUnderTest: @unchecked Sendable {
    let kind: StoreKind
    let registry: Registry
    let settings: PostgresStore.Settings?
    private let dir: TemporaryDirectory
    private static let counter = Counter()

    init(_ kind: StoreKind) async throws {
        self.kind = kind
        dir = try TemporaryDirectory(prefix: "registry-\(kind.rawValue)")
        switch kind {
        case .sqlite:
            settings = nil
            registry = try Registry(path: dir.appending("relay.sqlite"))
        case .postgres:
            guard let server = PostgresServerTrait.current else {
                throw TestProcessError.launchFailed(command: "postgres", underlying: "the suite needs the .postgresServer trait")
            }
            let name = "registry_\(Self.counter.next())_\(UInt32.random(in: 0...UInt32.max))"
            _ = try server.sql("CREATE DATABASE \(name)", database: "postgres")
            let settings = PostgresStore.Settings(host: "127.0.0.1", port: server.port, database: name, user: server.user, poolSize: 3)
            self.settings = settings
            registry = Registry(store: try await PostgresStore.open(settings, logger: Logger(label: "test.registry")))
        }
    }

    /// Another registry on the same database (a second replica, or a restarted relay).
    func reopen() async throws -> Registry {
        if let settings { return Registry(store: try await PostgresStore.open(settings, logger: Logger(label: "test.registry"))) }
        return try Registry(path: dir.appending("relay.sqlite"))
    }

    func close() async {
        await registry.store.close()
        dir.remove()
    }
}

final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int { value.withLock { $0 += 1; return $0 } }
}
