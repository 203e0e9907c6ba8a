import ArgumentParser
import Foundation
import Logging
import RelayAgent

/// `relay-agent import FILE…`: a relay bundle carried across an air gap.
struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify and publish a signed relay bundle (relay-server bundle export).",
        discussion: """
            Needs trust.relayPublicKeys and name in agent.yaml. Everything is checked before anything is \
            published: the parts, the statement's signature, that it is for this agent, that its sequence \
            is newer than the last imported, its expiry, every file's size and digest, every artifact's \
            cosign signature and Flux's unpack rules. A split bundle is imported from FILE (or FILE.001) \
            with all its parts beside it. When the agent runs, the import goes through its inbox. Prints \
            a JSON summary; on refusal {"ok": false, "code": …, "message": …} and exit 3 (codes: \
            bad_signature, wrong_agent, replayed, expired, missing_part, bad_part, digest_mismatch, \
            unlisted_file, missing_file, wrong_manifest, flux_rules, not_held, malformed, disk_full); exit 2: config.
            """)

    @Option(help: "Path to agent.yaml.")
    var config: String
    @Flag(help: "Import even if the bundle has expired (recorded as a status incident for the relay).")
    var allowExpired = false
    @Option(help: "Seconds to wait for a running agent's answer.")
    var timeout: Int = 600
    @Argument(help: "The bundle file (or its parts).")
    var files: [String]

    func run() async throws {
        let resolved = try loadConfig(config)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func refuse(_ code: String, _ message: String, exit: Int32) throws -> Never {
            print(String(decoding: try encoder.encode(InboxResult(ok: false, code: code, message: message)), as: UTF8.self))
            FileHandle.standardError.write(Data("error: \(message) [\(code)]\n".utf8))
            throw ExitCode(exit)
        }
        if resolved.trustedRelayKeys == nil { try refuse(BundleRefusal.trustRequired.code, BundleRefusal.trustRequired.description, exit: 2) }
        if resolved.name == nil { try refuse(BundleRefusal.nameRequired.code, BundleRefusal.nameRequired.description, exit: 2) }
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let paths = files.map { URL(fileURLWithPath: $0, relativeTo: cwd).standardizedFileURL.path }
        if AgentDataDirectory.runningAgentHoldsIt(resolved) {
            FileHandle.standardError.write(Data("an agent runs on this dataDir: importing through its request directory \(resolved.requestDirectory.path)\n".utf8))
            let result: InboxResult
            do {
                result = try InboxRequest.importBundle(inbox: resolved.requestDirectory, files: paths, allowExpired: allowExpired,
                                                       timeout: .seconds(timeout))
            } catch {
                try refuse("no_answer", "\(error)", exit: 1)
            }
            guard result.ok, let summary = result.imported else { try refuse(result.code, result.message, exit: 3) }
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            return
        }
        do {
            let runtime = try AgentRuntime(config: resolved, logger: Logger(label: "relay-agent"))
            let summary = try runtime.bundleImporter().run(paths, allowExpired: allowExpired)
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            FileHandle.standardError.write(Data("bundle \(summary.sequence) imported: \(summary.published.joined(separator: ", "))\n".utf8))
        } catch let refusal as BundleRefusal {
            try refuse(refusal.code, refusal.description, exit: refusal.code == "io" ? 1 : 3)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            // The data directory could not be opened (its journal held by another import, an
            // unreadable store): nothing was imported.
            try refuse("agent_unavailable", "cannot open the agent's data directory \(resolved.dataDirectory.path): \(error)", exit: 1)
        }
    }
}
