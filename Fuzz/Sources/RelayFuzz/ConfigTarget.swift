import Foundation
import RelayAgent
import RelayServer
import RelayShared
import Yams

/// relay.yaml and agent.yaml, through the same entry points the binaries use
/// (`ServerConfig.load(path:)`, `AgentConfig.load(path:)`: YAML decoding, then validation and
/// path resolution). The input is written as the config file into a directory holding the
/// files the seeds name (certificates, token files), so validation gets past file checks.
///
/// Invariant: the only failure is a `ConfigError` (the loaders throw nothing else by type),
/// and no input crashes or hangs them. A config whose strings could name a file outside the
/// fixture directory (absolute or `..` paths) is only decoded, not resolved: resolving reads
/// the files named, and a device such as /dev/zero or a FIFO would hang any reader.
enum ConfigTarget {
    static func runServer(_ input: Data) {
        guard let path = write(input, as: "relay.yaml", decodingOnlyAs: ServerConfig.self) else { return }
        _ = try? ServerConfig.load(path: path)
    }

    static func runAgent(_ input: Data) {
        guard let path = write(input, as: "agent.yaml", decodingOnlyAs: AgentConfig.self) else { return }
        _ = try? AgentConfig.load(path: path)
    }

    /// Writes the config into the fixture directory; nil (after decoding it only) when it must
    /// not be resolved.
    private static func write<Config: Decodable>(_ input: Data, as name: String, decodingOnlyAs type: Config.Type) -> String? {
        if mayNameOutsideFiles(input) {
            _ = try? YAMLDecoder().decode(type, from: String(decoding: input, as: UTF8.self))
            return nil
        }
        let path = ConfigFixture.directory.appendingPathComponent(name).path
        require(FileManager.default.createFile(atPath: path, contents: input), "cannot write a scratch file")
        return path
    }

    private static func mayNameOutsideFiles(_ input: Data) -> Bool {
        guard let node = try? Yams.compose(yaml: String(decoding: input, as: UTF8.self)) else { return false }
        var stack = [node]
        var seen = 0
        while let node = stack.popLast() {
            seen += 1
            if seen > 10_000 { return true }  // alias bombs: not worth resolving
            switch node {
            case .scalar(let scalar):
                let text = scalar.string
                if text.hasPrefix("/") || text.hasPrefix("~") || text.contains("..") || text.contains("\\") { return true }
            case .mapping(let mapping):
                for (key, value) in mapping { stack.append(key); stack.append(value) }
            case .sequence(let sequence):
                stack.append(contentsOf: sequence)
            case .alias:
                return true
            }
        }
        return false
    }
}

/// A directory with the files the config seeds name, and the relay.yaml other targets use.
enum ConfigFixture {
    static let directory: URL = {
        let directory = scratchDirectory.appendingPathComponent("config")
        try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // ca.pem, server.pem, server-key.pem: the loaders parse certificates and keys.
        do { _ = try DevCertificates.ensure(in: directory) } catch { fatalError("fixture certificates: \(error)") }
        let files = [
            "agent.token": "agent-token-for-fuzzing\n",
            "reader.token": "reader-token\n",
            "webhook.token": "webhook-token\n",
            "gitlab.token": "gitlab-token\n",
            "password": "git-password\n",
            "slack.url": "https://hooks.slack.example/services/T/B/X\n",
            "pull.password": "pull-password\n",
            "receiver.token": "receiver-key\n",
            "events.token": "events-key\n",
            "kubeconfig": "apiVersion: v1\nkind: Config\n",
        ]
        for (name, contents) in files {
            require(FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: Data(contents.utf8)), "cannot write a scratch file")
        }
        return directory
    }()

    /// Sources with every kind of ref, for the webhook target.
    static let serverConfig: ResolvedServerConfig = {
        let path = directory.appendingPathComponent("fixture-relay.yaml").path
        let yaml = """
            listen: 127.0.0.1:8443
            http: 127.0.0.1:8080
            tls: {certFile: server.pem, keyFile: server-key.pem}
            dataDir: data
            sources:
              - {name: main, url: "https://git.example/group/podinfo.git", ref: {branch: main}}
              - {name: tagged, url: "git@git.example:group/podinfo.git", ref: {tag: v1.0.0}}
              - {name: ranged, url: "ssh://git@Git.Example:2222/group/tool", ref: {semver: ">=1.0.0"}}
              - {name: pinned, url: "https://git.example/group/podinfo", ref: {commit: 0123456789abcdef0123456789abcdef01234567}}
              - {name: named, url: "http://user:pw@git.example:8080/group/app.git/", ref: {name: refs/pull/1/head}}
              - {name: default, url: "git://git.example/group/app"}
            agents:
              - {name: edge, tokenFile: agent.token, sources: [main, tagged, ranged, pinned, named, default]}
            """
        require(FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8)), "cannot write a scratch file")
        do { return try ServerConfig.load(path: path) } catch { fatalError("fixture relay.yaml: \(error)") }
    }()
}
