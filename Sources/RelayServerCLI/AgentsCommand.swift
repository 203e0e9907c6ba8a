import ArgumentParser
import Foundation
import Logging
import Provenance
import RelayServer
import RelayShared

/// `relay-server agents …`: agents managed from the command line, next to those in
/// relay.yaml. Works on the relay's database while the relay runs; changes take effect on
/// the agents' next call.
struct Agents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create agents and manage their tokens (create, list, rotate, revoke, delete).",
        discussion: """
            Tokens are printed once and stored only as SHA-256. Rotation adds a second valid token: \
            put it in the agent's tokenFile (the agent picks it up without reconnecting), then revoke \
            the old one.
            """,
        subcommands: [Create.self, List.self, Rotate.self, Revoke.self, Delete.self, Trust.self])

    struct Options: ParsableArguments {
        @Option(help: "Path to relay.yaml (for the data directory and the source names).")
        var config: String

        func registry() async throws -> (Registry, ResolvedServerConfig) {
            let resolved: ResolvedServerConfig
            do { resolved = try ServerConfig.load(path: config) } catch {
                throw ValidationError("\(error)")
            }
            return (try await Registry.open(resolved, logger: Logger(label: "relay-server.registry")), resolved)
        }
    }

    static func run(_ body: () async throws -> Void) async throws {
        do { try await body() } catch let error as AgentAdminError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as AgentKeyError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an agent and print its token (once).")
        @OptionGroup var options: Options
        @Argument(help: "Agent name (a-z 0-9 - . _, at most 63).") var name: String
        @Option(parsing: .upToNextOption, help: "Sources the agent may receive.") var sources: [String] = []

        func run() async throws {
            let (registry, config) = try await options.registry()
            guard !name.isEmpty, name.count <= 63, name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || "-._".contains($0)) }) else {
                throw ValidationError("'\(name)' must be 1-63 characters of a-z, 0-9, '-', '.', '_'")
            }
            try await Agents.run {
                for source in sources where !config.sources.contains(where: { $0.name == source }) { throw AgentAdminError.unknownSource(source) }
                let token = try await registry.createAgent(name, sources: sources)
                print(token)
                FileHandle.standardError.write(Data("created agent \(name); the token above is shown only now: put it in the agent's tokenFile\n".utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List agents, their sources and token fingerprints.")
        @OptionGroup var options: Options
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let (registry, _) = try await options.registry()
            let agents = try await registry.agentTokens()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                encoder.dateEncodingStrategy = .iso8601
                print(String(decoding: try encoder.encode(agents), as: UTF8.self))
            } else {
                for agent in agents {
                    let tokens = agent.tokens.map(\.sha256Prefix).joined(separator: ", ")
                    print("\(agent.name)  (\(agent.managedBy))  sources: \(agent.sources.joined(separator: ",") )  tokens: \(tokens)")
                }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new token (printed once); the old one stays valid until revoked.")
        @OptionGroup var options: Options
        @Argument var name: String

        func run() async throws {
            let (registry, _) = try await options.registry()
            try await Agents.run {
                print(try await registry.rotateToken(agent: name))
                FileHandle.standardError.write(Data("both tokens are valid now; once the agent uses the new one: relay-server agents revoke \(name)\n".utf8))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an agent's older tokens (all but the newest), or one by its SHA-256 prefix.",
            discussion: "Calls with a revoked token are refused at once; a session still standing on it is ended.")
        @OptionGroup var options: Options
        @Argument var name: String
        @Option(help: "Revoke only the token whose SHA-256 starts with this (see agents list).") var sha256: String?

        func run() async throws {
            let (registry, _) = try await options.registry()
            try await Agents.run {
                let count = try await registry.revokeTokens(agent: name, sha256Prefix: sha256)
                print("revoked \(count) token(s) of \(name)")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an agent created with `agents create` and all its tokens.")
        @OptionGroup var options: Options
        @Argument var name: String

        func run() async throws {
            let (registry, _) = try await options.registry()
            try await Agents.run {
                try await registry.deleteAgent(name)
                print("deleted agent \(name)")
            }
        }
    }
    struct Trust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Trust an agent's public key for its status bundles (relay-agent keys public), or remove one.",
            discussion: """
                An agent may have several trusted keys (a new disk, a rotation): `bundle import` accepts a \
                status bundle signed by any of them. `--list` shows them; `--remove KEYID` takes one away.
                """)
        @OptionGroup var options: Options
        @Argument(help: "Agent name.") var name: String
        @Argument(help: "PEM public key file (relay-agent keys public).") var keyFile: String?
        @Option(help: "Remove the trusted key with this id instead.") var remove: String?
        @Flag(help: "List the agent's trusted keys.") var list = false

        func validate() throws {
            guard [keyFile != nil, remove != nil, list].filter({ $0 }).count == 1 else {
                throw ValidationError("give one of: a public key file, --remove KEYID, --list")
            }
        }

        func run() async throws {
            let (registry, _) = try await options.registry()
            try await Agents.run {
                if list {
                    for key in try await registry.agentKeyList(name) { print("\(key.keyID)  added \(key.addedAt)") }
                } else if let remove {
                    try await registry.removeAgentKey(agent: name, keyID: remove)
                    print("removed key \(remove) of \(name)")
                } else if let keyFile {
                    let keys: [TrustedKey]
                    do { keys = try TrustedKey.load(path: keyFile) } catch {
                        throw ValidationError("\(error)")
                    }
                    let added = try await registry.trustAgentKeys(agent: name, keys: keys)
                    for key in keys { print("\(key.id)  \(added.contains(key.id) ? "trusted" : "already trusted") for \(name)") }
                }
            }
        }
    }
}
