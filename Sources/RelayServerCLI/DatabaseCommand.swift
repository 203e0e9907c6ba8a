import ArgumentParser
import Foundation
import Logging
import RelayServer
import RelayShared

/// `relay-server db …`: the relay's registry database.
struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Work on the relay's registry database.",
        subcommands: [Copy.self])

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a SQLite registry into the (empty) PostgreSQL that relay.yaml names (database.postgres).",
            discussion: """
                Stop the relay first. Everything is copied with its ids (agents, tokens, grants, revisions, \
                deliveries, status, notifications), in one transaction: on any failure the PostgreSQL database \
                stays empty and the command can be run again. The SQLite file is only read. Then start the \
                replicas with database.postgres in their relay.yaml.
                """)

        @Option(help: "Path to relay.yaml; its database.postgres is the target.")
        var config: String
        @Option(name: .customLong("from"), help: "The SQLite registry to copy (default: <dataDir>/relay.sqlite).")
        var from: String?

        func run() async throws {
            let resolved: ResolvedServerConfig
            do { resolved = try ServerConfig.load(path: config) } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
            guard resolved.postgres != nil else {
                FileHandle.standardError.write(Data("error: \(config): database.postgres is not set: name the PostgreSQL to copy into\n".utf8))
                throw ExitCode(2)
            }
            let path = from.map { URL(fileURLWithPath: $0) } ?? resolved.dataDirectory.appendingPathComponent("relay.sqlite")
            guard FileManager.default.fileExists(atPath: path.path) else {
                FileHandle.standardError.write(Data("error: no SQLite registry at \(path.path) (--from)\n".utf8))
                throw ExitCode(2)
            }
            let logger = Logger(label: "relay-server.registry")
            let source: Registry, target: Registry
            do {
                source = try Registry(path: path)
                target = try await Registry.open(resolved, logger: logger)
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(1)
            }
            FileHandle.standardError.write(Data("copying \(path.path) into \(target.location)\n".utf8))
            let counts: [String: Int]
            do {
                counts = try await RegistryCopy.copy(from: source, to: target) { table, rows in
                    if rows > 0, rows % 10_000 == 0 { FileHandle.standardError.write(Data("  \(table): \(rows) rows…\n".utf8)) }
                }
            } catch {
                await target.close()
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(1)
            }
            await target.close()
            for (table, rows) in counts.sorted(by: { $0.key < $1.key }) { print("\(table)\t\(rows)") }
            FileHandle.standardError.write(Data("copied \(counts.values.reduce(0, +)) rows; start the replicas with database.postgres\n".utf8))
        }
    }
}
