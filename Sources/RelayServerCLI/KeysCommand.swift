import ArgumentParser
import Foundation
import Provenance
import RelayServer
import RelayShared

/// `relay-server keys …`: the key that signs every artifact's manifest (cosign format) and
/// every bundle. Works on the files under dataDir; a running relay uses a rotated key from
/// its next start.
struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The relay's signing keys (public, rotate, remove).",
        discussion: """
            Agents with trust.relayPublicKeys and Flux OCIRepositories with spec.verify need the public key \
            (relay-server keys public). The key is created on the relay's first start under \
            <dataDir>/signing/relay.key unless signing.keyFile names one.
            """,
        subcommands: [Public.self, Rotate.self, Remove.self])

    struct Options: ParsableArguments {
        @Option(help: "Path to relay.yaml (for dataDir and signing).")
        var config: String

        func load() throws -> ResolvedServerConfig {
            do { return try ServerConfig.load(path: config) } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
    }

    static func run<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    struct Public: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the public signing keys as PEM: the current one first, then previous and retired ones.",
            discussion: """
                Give the whole output to agents (trust.relayPublicKeys: one file may hold several keys). \
                For a Flux Secret, use --current: Flux reads one key per `.pub` entry.
                """)
        @OptionGroup var options: Options
        @Flag(help: "Only the key that signs now.") var current = false
        @Flag(help: "JSON: [{\"id\", \"status\" (current, previous, retired), \"pem\"}].") var json = false

        func run() throws {
            let config = try options.load()
            let signer = try Keys.run { try RelaySigner.load(config) }
            let retired = Set(try Keys.run { try SigningKeyRotation.retiredKeys(config) })
            var keys = signer.publicKeys.map { key in
                (key: key, status: key == signer.key.publicKey ? "current" : retired.contains(key) ? "retired" : "previous")
            }
            if current { keys = Array(keys.prefix(1)) }
            if json {
                let objects = keys.map { ["id": $0.key.id, "status": $0.status, "pem": $0.key.pem + "\n"] }
                let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            for entry in keys { print(entry.key.pem) }
            let summary = keys.map { "\($0.key.id) (\($0.status))" }.joined(separator: ", ")
            FileHandle.standardError.write(Data("keys: \(summary)\n".utf8))
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retire the current default key (kept under <dataDir>/signing/retired) and create a new one.",
            discussion: """
                Give agents the new public key before they receive artifacts signed with it: `keys public` lists \
                the new and the retired keys together. The running relay signs with the new key from its next start.
                """)
        @OptionGroup var options: Options

        func run() throws {
            let config = try options.load()
            let (retired, current) = try Keys.run { try SigningKeyRotation.rotate(config) }
            print("retired \(retired.id); new signing key \(current.id)")
            print("a running relay-server signs with the new key from its next start (restart it); "
                + "relay-server keys public lists both keys until `relay-server keys remove \(retired.id)`")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a retired key (private and public halves); `keys public` stops listing it.")
        @OptionGroup var options: Options
        @Argument(help: "Key id (as `keys public` prints it).") var keyID: String

        func run() throws {
            let config = try options.load()
            try Keys.run { try SigningKeyRotation.remove(id: keyID, config: config) }
            print("removed retired key \(keyID)")
        }
    }
}
