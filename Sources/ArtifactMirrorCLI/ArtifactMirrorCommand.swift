import ArgumentParser
import ArtifactMirror
import Foundation

@main
struct ArtifactMirrorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "artifact-mirror",
        abstract: "Turn Git revisions into Flux-compatible artifacts (.tar.gz, sha256 digest, Flux revision).",
        discussion: """
            `pack` mirrors a repository (https, http, ssh, git, file or a local path) into a local cache,
            resolves a ref exactly as Flux's GitRepository.spec.ref does, and writes a tarball that
            Flux's controllers accept unchanged. `verify` checks any .tar.gz against Flux's unpack rules.

            Exit status: 0 ok, 1 other failure, 2 bad arguments, 3 unknown ref or no matching tag,
            4 authentication or host-key failure, 5 remote unreachable, 6 not a repository or empty
            repository, 7 local storage failure, 8 verification failed.
            """,
        subcommands: [PackCommand.self, VerifyCommand.self, ListCommand.self]
    )
}

/// Prints a failure the way scripts and people both want it, then exits with its status.
func fail(_ error: ArtifactMirrorError, json: Bool) -> ExitCode {
    if json {
        let object: [String: Any] = ["error": ["code": error.code, "message": error.description]]
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            print(String(decoding: data, as: UTF8.self))
        }
    }
    FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
    return ExitCode(error.exitCode)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func readSecret(file: String?, option: String) throws(ArtifactMirrorError) -> String? {
    guard let file else { return nil }
    guard let data = FileManager.default.contents(atPath: file) else {
        throw .invalidArgument("\(option) \(file): file does not exist or is not readable")
    }
    let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
    guard !text.isEmpty else { throw .invalidArgument("\(option) \(file): file is empty") }
    return text
}

func defaultCacheDirectory() -> URL {
    let env = ProcessInfo.processInfo.environment
    let base = env["XDG_CACHE_HOME"].map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: NSHomeDirectory()).appendingPathComponent(".cache")
    return base.appendingPathComponent("relay/mirrors")
}
