import ArgumentParser
import ArtifactMirror
import Foundation

struct PackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Pack one revision of a Git repository as a Flux artifact.",
        discussion: """
            Choose the revision like GitRepository.spec.ref: at most one of --branch, --tag, --semver,
            --ref-name, or --commit (optionally with --branch). With none, Flux's default applies:
            branch 'master'.

            Prints progress on stderr when it is a terminal; with --json prints one JSON object on
            stdout: revision, digest, size, path, commit, files, skipped, cached, source.

            Examples:
              artifact-mirror pack https://gitlab.example.com/team/deploy.git --branch main --output ./artifacts --json
              artifact-mirror pack ssh://git@gitlab.example.com/team/deploy.git --semver '>=1.2.0 <2.0.0' \\
                  --ssh-key ~/.ssh/deploy_rsa --known-hosts ./known_hosts --output ./artifacts
            """
    )

    @Argument(help: "Repository: https://…, http://…, ssh://…, user@host:path, git://…, file://… or a local path.")
    var source: String

    @Option(help: "Branch to pack (revision '<branch>@sha1:<commit>').")
    var branch: String?
    @Option(help: "Tag to pack; annotated tags are peeled to their commit.")
    var tag: String?
    @Option(help: "Semver range: the highest matching tag is packed (e.g. '>=1.0.0 <2.0.0', '~1.2', '^0.3').")
    var semver: String?
    @Option(help: "Commit SHA-1 (40 hex). With --branch it must be on that branch and the revision names the branch.")
    var commit: String?
    @Option(name: .customLong("ref-name"), help: "Full ref name, e.g. refs/pull/420/head.")
    var refName: String?

    @Option(name: .customLong("ignore-file"), help: "File of extra ignore patterns (gitignore syntax), like GitRepository .spec.ignore.")
    var ignoreFile: String?
    @Option(name: .customLong("ignore"), help: "An extra ignore pattern (repeatable); applied after --ignore-file.")
    var ignorePatterns: [String] = []

    @Option(help: "Mirror cache directory (default: $XDG_CACHE_HOME/relay/mirrors or ~/.cache/relay/mirrors).")
    var cache: String?
    @Option(help: "Artifact store directory; the artifact is written under <output>/artifacts/sha256/.")
    var output: String
    @Option(help: "Artifacts kept per source in the store (older ones are deleted).")
    var keep: Int = 10

    @Option(help: "User name for http(s) (default 'oauth2' when a token is given).")
    var username: String?
    @Option(name: .customLong("password-file"), help: "File holding the http(s) password.")
    var passwordFile: String?
    @Option(name: .customLong("token-file"), help: "File holding an access token (sent as the http(s) password).")
    var tokenFile: String?
    @Option(name: .customLong("ssh-key"), help: "SSH private key file.")
    var sshKey: String?
    @Option(name: .customLong("ssh-passphrase-file"), help: "File holding the SSH key's passphrase.")
    var sshPassphraseFile: String?
    @Option(name: .customLong("known-hosts"), help: "known_hosts file for SSH host keys (default ~/.ssh/known_hosts).")
    var knownHosts: String?
    @Option(name: .customLong("ca-file"), help: "PEM CA bundle for https (default: the system bundle).")
    var caFile: String?

    @Option(help: "Compression threads (default: number of cores). The output is identical for any value.")
    var threads: Int?
    @Flag(help: "Print one JSON object on stdout.")
    var json = false
    @Flag(help: "No progress on stderr.")
    var quiet = false

    func validate() throws {
        let chosen = [branch, tag, semver, refName].compactMap { $0 }.count
        if commit != nil {
            if tag != nil || semver != nil || refName != nil {
                throw ValidationError("--commit combines only with --branch")
            }
        } else if chosen > 1 {
            throw ValidationError("choose one of --branch, --tag, --semver, --ref-name (or --commit with --branch)")
        }
        if passwordFile != nil, tokenFile != nil { throw ValidationError("use --password-file or --token-file, not both") }
        if keep < 1 { throw ValidationError("--keep must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    var reference: GitReference? {
        if let commit { return .commit(commit.lowercased(), branch: branch) }
        if let refName { return .name(refName) }
        if let semver { return .semver(semver) }
        if let tag { return .tag(tag) }
        if let branch { return .branch(branch) }
        return nil
    }

    func run() async throws {
        do {
            let result = try await pack()
            if json {
                try printJSON(result)
            } else {
                print("""
                    revision: \(result.revision)
                    digest:   \(result.digest)
                    size:     \(result.size) bytes, \(result.files) files\(result.cached ? " (cached)" : "")
                    path:     \(result.path)
                    """)
                for skipped in result.skipped { print("skipped:  \(skipped.path) (\(skipped.reason.rawValue))") }
            }
        } catch let error as ArtifactMirrorError {
            throw fail(error, json: json)
        }
    }

    private func pack() async throws(ArtifactMirrorError) -> PackResult {
        if let caFile { try GitRuntime.useCertificateAuthorities(file: caFile) }
        var ignore = ""
        if let ignoreFile {
            guard let data = FileManager.default.contents(atPath: ignoreFile) else {
                throw .invalidArgument("--ignore-file \(ignoreFile): file does not exist or is not readable")
            }
            ignore = String(decoding: data, as: UTF8.self)
        }
        if !ignorePatterns.isEmpty {
            if !ignore.isEmpty, !ignore.hasSuffix("\n") { ignore += "\n" }
            ignore += ignorePatterns.joined(separator: "\n")
        }
        if let sshKey, !FileManager.default.isReadableFile(atPath: sshKey) {
            throw .invalidArgument("--ssh-key \(sshKey): file does not exist or is not readable")
        }
        var password = try readSecret(file: passwordFile, option: "--password-file")
        if password == nil { password = try readSecret(file: tokenFile, option: "--token-file") }
        let credentials = GitCredentials(
            username: username ?? (tokenFile != nil ? "oauth2" : nil), password: password,
            sshPrivateKey: sshKey, sshPassphrase: try readSecret(file: sshPassphraseFile, option: "--ssh-passphrase-file"),
            knownHosts: knownHosts)
        let request = PackRequest(remote: try RemoteLocation(source), reference: reference,
                                  credentials: credentials, ignore: ignore.isEmpty ? nil : ignore)
        let store = try ArtifactStore(root: URL(fileURLWithPath: output), retention: keep)
        let reporter = ProgressReporter(enabled: !quiet && isatty(STDERR_FILENO) == 1)
        let packer = ArtifactPacker(
            cacheDirectory: cache.map { URL(fileURLWithPath: $0) } ?? defaultCacheDirectory(), store: store,
            compressionThreads: threads ?? ProcessInfo.processInfo.activeProcessorCount,
            events: { reporter.report($0) })
        defer { reporter.done() }
        return try await packer.pack(request)
    }
}
