import ArgumentParser
import Foundation
import Logging
import RelayServer
import RelayShared

@main
struct RelayServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-server",
        abstract: "Mirror Git sources, package them as Flux artifacts and push them to relay agents.",
        subcommands: [Serve.self, Agents.self, HashToken.self, CheckConfig.self, DevCerts.self, Keys.self, Bundle.self, DatabaseCommand.self,
                      Release.self, Wait.self, Diff.self]
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay: package sources, accept agents on the TLS tunnel, take webhooks.",
        discussion: "Stops gracefully on SIGTERM or SIGINT: agents are told to reconnect after a jittered delay."
    )

    @Option(help: "Path to relay.yaml (see the README for every field).")
    var config: String
    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"
    @Option(help: "Log format: text (default) or json (one object per line); also RELAY_LOG_FORMAT.")
    var logFormat: String?

    func run() async throws {
        let resolved: ResolvedServerConfig
        let logger: Logger
        do {
            resolved = try ServerConfig.load(path: config)
            logger = try Observability.start(label: "relay-server", level: logLevel, format: logFormat)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        AllocatorTuning.apply()
        try await RelayServerApp.run(config: resolved, logger: logger)
    }
}

struct HashToken: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-token",
        abstract: "Print the SHA-256 of an agent token (for agents[].tokenSHA256), or make a new token.",
        discussion: "Reads the token from --token-file, or generates one with --generate (printed on stdout first)."
    )

    @Option(name: .customLong("token-file"), help: "File holding the token.")
    var tokenFile: String?
    @Flag(help: "Generate a new random token and print it, then its hash.")
    var generate = false

    func run() throws {
        let token: String
        if generate {
            token = TokenHash.generate()
            print(token)
        } else if let tokenFile {
            do { token = try TokenHash.readToken(file: tokenFile) } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
        } else {
            throw ValidationError("give --token-file or --generate")
        }
        print(TokenHash.sha256Hex(token))
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate relay.yaml and exit.")

    @Option(help: "Path to relay.yaml.")
    var config: String

    func run() throws {
        do {
            let resolved = try ServerConfig.load(path: config)
            print("ok: \(resolved.sources.count) sources, \(resolved.agents.count) agents, tunnel \(resolved.listen), http \(resolved.http)")
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

struct DevCerts: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-certs",
        abstract: "Create (or reuse) a development CA and a server certificate for localhost, 127.0.0.1 and ::1.",
        discussion: "For trying Relay on one machine. Production relays use certificates from your own CA.")

    @Option(help: "Directory for ca.pem, ca-key.pem, server.pem, server-key.pem.")
    var dir: String
    @Option(name: .customLong("dns"), help: "Extra DNS name for the server certificate (repeatable).")
    var dnsNames: [String] = []

    func run() throws {
        let certificates = try DevCertificates.ensure(in: URL(fileURLWithPath: dir),
                                                      dnsNames: ["localhost"] + dnsNames)
        print("ca:     \(certificates.caCertificate.path)")
        print("server: \(certificates.serverCertificate.path)")
        print("key:    \(certificates.serverKey.path)")
    }
}
