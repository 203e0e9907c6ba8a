import ArgumentParser
import Foundation
import Logging
import Provenance
import RelayAgent

/// `relay-agent export-status`: the way back over an air gap.
struct ExportStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-status",
        abstract: "Write a signed status bundle: status not yet acknowledged, the artifacts held, the last bundle imported.",
        discussion: """
            Carry FILE to the relay and run `relay-server bundle import FILE` there (the relay must trust this \
            agent's key: `relay-agent keys public`, then `relay-server agents trust NAME agent.pub`). The \
            journal is kept until the relay acknowledges it (in the next bundle, or online), so exporting \
            again is harmless. Prints a JSON summary; exit 3 when nothing could be written.
            """)

    @Option(help: "Path to agent.yaml (needs `name`).")
    var config: String
    @Option(help: "Where to write the status bundle (replaced atomically).")
    var output: String
    @Option(help: "Seconds to wait for a running agent's answer.")
    var timeout: Int = 120

    func run() async throws {
        let resolved = try loadConfig(config)
        let target = URL(fileURLWithPath: output, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func fail(_ code: String, _ message: String, exit: Int32) -> ExitCode {
            FileHandle.standardError.write(Data("error: \(message) [\(code)]\n".utf8))
            return ExitCode(exit)
        }
        guard resolved.name != nil else { throw fail(StatusExportError.nameRequired.code, StatusExportError.nameRequired.description, exit: 2) }
        let summary: StatusExportSummary
        if AgentDataDirectory.runningAgentHoldsIt(resolved) {
            // The running agent holds the journal: it writes the bundle (through its inbox).
            FileHandle.standardError.write(Data("an agent runs on this dataDir: exporting through its request directory \(resolved.requestDirectory.path)\n".utf8))
            let result: InboxResult
            do {
                result = try InboxRequest.exportStatus(inbox: resolved.requestDirectory, output: target, timeout: .seconds(timeout))
            } catch {
                throw fail("no_answer", "\(error)", exit: 3)
            }
            guard result.ok, let written = result.status else { throw fail(result.code, result.message, exit: 3) }
            summary = written
        } else {
            do {
                let runtime = try AgentRuntime(config: resolved, logger: Logger(label: "relay-agent"))
                summary = try runtime.statusExporter().export(output: target)
            } catch let error as StatusExportError {
                throw fail(error.code, error.description, exit: 3)
            }
        }
        print(String(decoding: try encoder.encode(summary), as: UTF8.self))
    }
}

/// `relay-agent keys public`: the agent's public key, for `relay-server agents trust`.
struct AgentKeys: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "The agent's signing key for status bundles (<dataDir>/agent.key).",
        subcommands: [Public.self])

    struct Public: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "public",
            abstract: "Print the agent's public key (PEM), creating the key on first use.",
            discussion: "Register it at the relay: relay-server agents trust NAME agent.pub --config relay.yaml")
        @Option(help: "Path to agent.yaml.")
        var config: String

        func run() throws {
            let resolved = try loadConfig(config)
            do {
                let key = try AgentKey.loadOrCreate(dataDirectory: resolved.dataDirectory)
                print(key.publicKey.pem)
                FileHandle.standardError.write(Data("key id \(key.publicKey.id) (\(AgentKey.path(dataDirectory: resolved.dataDirectory)))\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("error: \(error) [\(error.code)]\n".utf8))
                throw ExitCode(3)
            }
        }
    }
}
