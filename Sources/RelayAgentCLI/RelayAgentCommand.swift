import ArgumentParser
import Foundation
import Logging
import RelayAgent
import RelayShared

@main
struct RelayAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-agent",
        abstract: "Receive artifacts from a relay over one outbound TLS connection, verify them and keep them for Flux.",
        subcommands: [Run.self, List.self, Fetch.self, CheckConfig.self, Import.self, ExportStatus.self, AgentKeys.self]
    )
}

func loadConfig(_ path: String) throws -> ResolvedAgentConfig {
    do { return try AgentConfig.load(path: path) } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(2)
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate agent.yaml and exit.")

    @Option(help: "Path to agent.yaml.")
    var config: String

    func run() throws {
        let resolved = try loadConfig(config)
        print("ok: " + (resolved.link.map { $0.relays.count == 1 ? "relay \($0.relay)" : "relays \($0.relays.map(\.description).joined(separator: ", "))" } ?? "offline (no relay), agent \(resolved.name ?? "")") + ", dataDir \(resolved.dataDirectory.path)"
              + (resolved.listen.map { ", listen \($0)" } ?? ""))
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Dial the relay and keep the store in line with the desired state until stopped.")

    @Option(help: "Path to agent.yaml (see the README).")
    var config: String
    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"
    @Option(help: "Log format: text (default) or json (one object per line); also RELAY_LOG_FORMAT.")
    var logFormat: String?

    func run() async throws {
        let resolved = try loadConfig(config)
        let logger: Logger
        do { logger = try Observability.start(label: "relay-agent", level: logLevel, format: logFormat) } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        AllocatorTuning.apply()
        let runtime = try AgentRuntime(config: resolved, logger: logger)
        let orphans = runtime.removeOrphanedTemporaryFiles()
        if orphans > 0 { logger.notice("removed temporary files left by a killed agent", metadata: ["files": "\(orphans)"]) }
        try runtime.verifyStore()
        try await AgentService.runUntilSignalled(runtime, logger: logger)
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the published artifacts.")

    @Option(help: "Path to agent.yaml.")
    var config: String
    @Flag(help: "Print JSON: [{source, revision, digest, size}].")
    var json = false

    func run() throws {
        let resolved = try loadConfig(config)
        let runtime = try AgentRuntime(config: resolved, logger: Logger(label: "relay-agent"))
        let records = try runtime.published()
        if json {
            let rows = records.map { ["source": $0.source, "revision": $0.revision, "digest": $0.digest, "size": $0.size] as [String: any Sendable] }
            let data = try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for record in records { print("\(record.source)  \(record.revision)  \(record.digest)  \(record.size) bytes") }
        }
    }
}

struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch one artifact by digest (diagnostics): prints {code, message, bytes, digest} as JSON.",
        discussion: "Exit 0 when the relay served it completely with every chunk intact; 3 otherwise.")

    @Option(help: "Path to agent.yaml.")
    var config: String
    @Option(help: "sha256:<hex> of the artifact.")
    var digest: String
    @Option(help: "Write the bytes here (default: discard).")
    var out: String?

    func run() async throws {
        let resolved = try loadConfig(config)
        let runtime = try AgentRuntime(config: resolved, logger: Logger(label: "relay-agent"))
        let result = await runtime.fetchOnce(digest: digest, output: out)
        let data = try JSONEncoder().encode(result)
        print(String(decoding: data, as: UTF8.self))
        if result.code != "ok" { throw ExitCode(3) }
    }
}
