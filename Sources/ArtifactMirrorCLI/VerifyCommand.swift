import ArgumentParser
import ArtifactMirror
import Foundation

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a .tar.gz against Flux's unpack rules and, optionally, its digest.",
        discussion: """
            Exit 0 only when Flux would unpack the file cleanly: gzip, regular files and directories
            only (symlinks are dropped by Flux and only warned about), relative names without '\\' or
            '..', owner-readable modes, a complete archive; and, with --digest, the exact sha256.
            Exit 8 when a rule is broken.
            """
    )

    @Argument(help: "The artifact file.")
    var file: String
    @Option(help: "Expected digest, sha256:<hex>.")
    var digest: String?
    @Option(name: .customLong("max-size"),
            help: "Fail when the unpacked size (sum of header sizes) exceeds this many bytes. Flux's untar default is 104857600; kustomize-controller sets no limit.")
    var maxSize: UInt64?
    @Flag(help: "Print the report as JSON on stdout.")
    var json = false

    func run() async throws {
        let report: VerificationReport
        do {
            report = try TarballVerifier(expectedDigest: digest, maxUnpackedSize: maxSize).verify(file: file)
        } catch {
            throw fail(error, json: json)
        }
        if json {
            try printJSON(report)
        } else {
            print("\(report.ok ? "ok" : "FAILED"): \(report.path)")
            print("digest:  \(report.digest) (\(report.size) bytes)")
            print("entries: \(report.entries) (\(report.files) files, \(report.directories) directories, \(report.unpackedBytes) bytes unpacked)")
            for warning in report.warnings { print("warning: \(warning)") }
            for error in report.errors { print("error:   \(error)") }
        }
        if !report.ok { throw ExitCode(8) }
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the artifacts in a store, most recently used first per source."
    )

    @Option(help: "Artifact store directory (the --output of pack).")
    var output: String
    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let store = try ArtifactStore(root: URL(fileURLWithPath: output))
            let records = try store.allRecords()
            if json {
                try printJSON(records)
            } else {
                for record in records {
                    print("\(record.source)  \(record.revision)  \(record.digest)  \(record.size) bytes")
                }
            }
        } catch let error as ArtifactMirrorError {
            throw fail(error, json: json)
        }
    }
}
