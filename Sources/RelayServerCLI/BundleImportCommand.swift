import ArgumentParser
import Foundation
import Logging
import RelayServer
import RelayShared

/// `relay-server bundle import FILE`: a status bundle an agent wrote (`relay-agent export-status`).
struct BundleImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Verify and store a status bundle an agent wrote (relay-agent export-status).",
        discussion: """
            The bundle must be signed by a key trusted for the agent it names (relay-server agents trust). \
            Its entries are stored as if they had come over the tunnel: importing the same bundle again \
            stores nothing new, and a running relay streams and notifies them within a second or two. \
            Prints a JSON summary {agent, journal, entries, stored, duplicates, up_to, delivered, …}. \
            On refusal nothing is stored; it prints {"ok": false, "code": …, "message": …} and exits 3.
            """)

    @Option(help: "Path to relay.yaml (for the data directory).")
    var config: String
    @Argument(help: "The status bundle file.")
    var file: String

    func run() async throws {
        let resolved: ResolvedServerConfig
        do { resolved = try ServerConfig.load(path: config) } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let registry = try await Registry.open(resolved, logger: Logger(label: "relay-server.registry"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            let summary = try await StatusBundleImport(registry: registry).run(path: file)
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            FileHandle.standardError.write(Data("stored \(summary.stored) new status entries of \(summary.agent) (\(summary.duplicates) already held); the next `relay-server bundle export --agent \(summary.agent)` acknowledges them\n".utf8))
        } catch let refusal as StatusBundleRefusal {
            try CommandRefusal.fail(code: refusal.code, message: refusal.description, exit: 3)
        } catch {
            let message = "cannot store the status bundle in the relay's database: \(error); nothing was stored, import it again"
            try CommandRefusal.fail(code: "relay_data_unavailable", message: message, exit: 1)
        }
    }
}
