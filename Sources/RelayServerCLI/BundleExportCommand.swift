import ArgumentParser
import Foundation
import Logging
import Provenance
import RelayServer
import RelayShared

/// `relay-server bundle export`: a signed bundle of one agent's desired state.
struct BundleExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a signed bundle of an agent's artifacts (for `relay-agent import` on the far side of an air gap).",
        discussion: """
            FILE is an OCI image layout in a tar: `skopeo inspect oci-archive:FILE:<source>` reads it. It holds \
            the newest artifact of every source the agent is granted, its manifest and the relay's cosign \
            signature, and a statement signed with the relay's key (agent, a sequence that only grows, \
            expiry, every file's digest, and the status acknowledgement). With --since STATUS_BUNDLE (from \
            `relay-agent export-status`) the artifacts the agent already holds are left out. With --max-size \
            it is split into FILE.001, FILE.002, … that import only together. Progress goes to stderr, a \
            JSON summary to stdout. Exit 2: bad config or flags; 3: refused (the JSON's code says why: \
            unknown_agent, no_grants, not_packaged, artifact_missing, no_trusted_key, bad_signature, \
            wrong_agent, status_bundle_invalid, max_size_too_small); 1: the file could not be written.
            """)

    @Option(help: "Path to relay.yaml.")
    var config: String
    @Option(help: "The agent the bundle is for.")
    var agent: String
    @Option(help: "Where to write the bundle (parts: FILE.001, …).")
    var output: String
    @Option(help: "A status bundle of the agent (relay-agent export-status): leave out what it holds.")
    var since: String?
    @Flag(help: "Carry every artifact (the default).")
    var full = false
    @Option(help: "Split into parts of at most this many bytes (at least 1MiB; units KB/MB/GB = 1000-based, KiB/MiB/GiB = 1024-based, e.g. 4GB).")
    var maxSize: String?
    @Option(help: "The agent refuses the bundle after this long (e.g. 720h, 30m); default: never.")
    var expiresIn: String?

    func validate() throws {
        if full && since != nil { throw ValidationError("--full and --since exclude each other") }
        if let maxSize, Self.bytes(maxSize) == nil { throw ValidationError("--max-size: '\(maxSize)' is not a byte count (e.g. 1073741824, 512MB, 4GB, 1GiB)") }
        if let expiresIn, ConfigDuration(parsing: expiresIn) == nil { throw ValidationError("--expires-in: '\(expiresIn)' is not a duration (e.g. 720h, 90m)") }
    }

    /// A byte count: digits, optionally with a unit: k/K/KB, M/MB, G/GB, T/TB are powers of 1000
    /// (a FAT32 stick holds files up to 4 GiB - 1: `4GB` fits), Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB powers of 1024.
    static func bytes(_ text: String) -> UInt64? {
        let digits = text.prefix { $0.isNumber }
        guard let value = UInt64(digits) else { return nil }
        let units: [String: UInt64] = ["": 1, "B": 1, "k": 1000, "K": 1000, "KB": 1000, "M": 1_000_000, "MB": 1_000_000,
                                       "G": 1_000_000_000, "GB": 1_000_000_000, "T": 1_000_000_000_000, "TB": 1_000_000_000_000,
                                       "Ki": 1 << 10, "KiB": 1 << 10, "Mi": 1 << 20, "MiB": 1 << 20, "Gi": 1 << 30, "GiB": 1 << 30,
                                       "Ti": 1 << 40, "TiB": 1 << 40]
        guard let unit = units[String(text.dropFirst(digits.count))] else { return nil }
        let (result, overflow) = value.multipliedReportingOverflow(by: unit)
        return overflow ? nil : result
    }

    func run() async throws {
        let resolved: ResolvedServerConfig
        do { resolved = try ServerConfig.load(path: config) } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            let registry = try await Registry.open(resolved, logger: Logger(label: "relay-server.registry"))
            let signer = try RelaySigner.load(resolved)
            let exporter = try BundleExporter(config: resolved, registry: registry, signer: signer) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            let expires = expiresIn.flatMap(ConfigDuration.init(parsing:)).map { Double($0.duration.components.seconds) + Double($0.duration.components.attoseconds) / 1e18 }
            let summary = try await exporter.export(.init(agent: agent, output: output, since: since,
                                                          maxSize: maxSize.flatMap(Self.bytes), expiresIn: expires))
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            FileHandle.standardError.write(Data(("bundle #\(summary.sequence) for \(summary.agent): \(summary.included.count) artifact(s) carried, "
                + "\(summary.omitted.count) left out (held), \(summary.bytes) bytes in \(summary.files.joined(separator: ", "))\n").utf8))
        } catch let refusal as BundleExportError {
            try CommandRefusal.fail(code: refusal.code, message: refusal.description, exit: refusal.code == "io" ? 1 : 3)
        } catch {
            let message = "cannot read the relay's data (\(resolved.dataDirectory.path)): \(error)"
            try CommandRefusal.fail(code: "relay_data_unavailable", message: message, exit: 1)
        }
    }
}
