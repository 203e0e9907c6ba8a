import ArgumentParser
import Foundation
import Logging
import RelayServer
import RelayShared

/// `relay-server release`: push a source's newest revision to one agent through a deploy
/// freeze, recorded with who and why. Works on the relay's database while the relay runs.
struct Release: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Release a source's newest revision to one agent during a deploy freeze (recorded with who and why).")

    @Option(help: "Path to relay.yaml.") var config: String
    @Option(help: "The source.") var source: String
    @Option(help: "The agent that gets the revision now.") var agent: String
    @Option(help: "Why (recorded, shown on the page and in the commit status).") var reason: String
    @Option(help: "Who releases it (default: $USER@<hostname>).") var by: String?
    @Option(help: "The revision you mean (revision, commit or prefix, digest): refused if the newest is another one.") var revision: String?

    func run() async throws {
        let resolved: ResolvedServerConfig
        do { resolved = try ServerConfig.load(path: config) } catch { throw ValidationError("\(error)") }
        guard resolved.sources.contains(where: { $0.name == source }) else { throw ValidationError("no source named '\(source)' in \(config)") }
        let registry = try await Registry.open(resolved, logger: Logger(label: "relay-server.registry"))
        let who = by ?? "\(ProcessInfo.processInfo.environment["USER"] ?? "operator")@\(ProcessInfo.processInfo.hostName)"
        do {
            let release = try await RolloutReleases.release(source: source, agent: agent, reason: reason, by: who, expected: revision,
                                                            registry: registry)
            await registry.close()
            print("released \(release.revision) of \(source) to \(agent) (by \(release.by): \(release.reason))")
        } catch {
            await registry.close()
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// `relay-server wait`: a pipeline gate.
struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until every targeted agent reports a revision applied and healthy.",
        discussion: """
            Exit status: 0 all healthy, 1 a failure (the failing agents and Flux's message are printed), \
            2 timed out, 3 the relay refused the question (token, source or revision unknown).
            """)

    @Option(help: "The relay's HTTP address, e.g. https://relay.example.com") var relay: String
    @Option(name: .customLong("token-file"), help: "A file holding a reader token.") var tokenFile: String
    @Option(help: "The source.") var source: String
    @Option(help: "The revision: a revision string, a commit SHA (or a 7+ digit prefix) or a digest.") var revision: String
    @Option(help: "Only these agents (glob, or a comma-separated list of globs).") var agents: String?
    @Option(help: "Give up after this long (e.g. 15m, 90s).") var timeout: String = "15m"
    @Flag(help: "Print the final state as JSON.") var json = false

    func run() async throws {
        guard let limit = ConfigDuration(parsing: timeout) else { throw ValidationError("--timeout '\(timeout)' is not a duration, e.g. 15m") }
        let token: String
        do { token = try TokenHash.readToken(file: tokenFile) } catch { throw ValidationError("--token-file: \(error)") }
        let waiter = RolloutWaiter(relay: relay, token: token, source: source, revision: revision, agents: agents,
                                   timeout: limit.duration, json: json)
        let outcome = await waiter.run { line in print(line); fflush(nil) }
        if outcome != .healthy { throw ExitCode(outcome.rawValue) }
    }
}

/// `relay-server diff`: what changes between two revisions' artifacts.
struct Diff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the unified diff of the files two revisions of a source deliver (after ignore rules).")

    @Option(help: "Path to relay.yaml (reads the relay's store), or use --relay.") var config: String?
    @Option(help: "A relay's HTTP address (asks its API instead of the local store).") var relay: String?
    @Option(name: .customLong("token-file"), help: "A reader token (with --relay).") var tokenFile: String?
    @Option(help: "The source.") var source: String?
    @Option(help: "The old revision (revision string, commit SHA or prefix, digest).") var from: String?
    @Option(help: "The new revision.") var to: String?
    @Option(name: .customLong("from-artifact"), help: "Instead of revisions: two artifact files (e.g. from artifact-mirror pack of a merge request's base and head).")
    var fromArtifact: String?
    @Option(name: .customLong("to-artifact"), help: "The new artifact file (with --from-artifact).") var toArtifact: String?

    func run() async throws {
        if let fromArtifact, let toArtifact {
            do {
                print(try LocalDiff.files(fromArtifact, toArtifact), terminator: "")
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
            return
        }
        guard let source, let from, let to else {
            throw ValidationError("give --source, --from and --to (revisions), or --from-artifact and --to-artifact (files)")
        }
        if let relay {
            guard let tokenFile else { throw ValidationError("--relay needs --token-file") }
            let token: String
            do { token = try TokenHash.readToken(file: tokenFile) } catch { throw ValidationError("--token-file: \(error)") }
            let (status, text) = try await RemoteDiff.fetch(relay: relay, token: token, source: source, from: from, to: to)
            guard status == 200 else {
                FileHandle.standardError.write(Data("error: the relay answered \(status): \(text)\n".utf8))
                throw ExitCode(2)
            }
            print(text, terminator: "")
            return
        }
        guard let config else { throw ValidationError("give --config (the relay's store) or --relay") }
        let resolved: ResolvedServerConfig
        do { resolved = try ServerConfig.load(path: config) } catch { throw ValidationError("\(error)") }
        let registry = try await Registry.open(resolved, logger: Logger(label: "relay-server.registry"))
        do {
            let text = try await LocalDiff.run(config: resolved, registry: registry, source: source, from: from, to: to)
            await registry.close()
            print(text, terminator: "")
        } catch {
            await registry.close()
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}
