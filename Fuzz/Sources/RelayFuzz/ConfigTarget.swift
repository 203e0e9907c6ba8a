import Foundation
import RelayAgent
import RelayServer
import RelayShared
import Yams

/// relay.yaml and agent.yaml, through the entry point the binaries' loading shares
/// (`ConfigFile.parse(yaml:baseDirectory:)`: strict YAML decoding, then validation and path
/// resolution) against a directory holding the files the seeds name (certificates, token
/// files), so validation gets past its file checks.
///
/// Invariant: no input crashes or hangs the loaders, and a rejection says what is wrong. A
/// config whose strings could name a file outside the fixture directory (absolute or `..`
/// paths) is only decoded, not resolved: resolving reads the files named, and a device such as
/// /dev/zero or a FIFO would hang any reader.
enum ConfigTarget {
    static func runServer(_ input: Data) { run(input, as: ServerConfig.self) }

    static func runAgent(_ input: Data) { run(input, as: AgentConfig.self) }

    private static func run<Config: ConfigFile>(_ input: Data, as type: Config.Type) {
        let yaml = String(decoding: input, as: UTF8.self)
        do {
            if mayNameOutsideFiles(yaml) {
                _ = try ConfigLoader.decode(type, yaml: yaml, file: Config.fileName)
            } else {
                _ = try Config.parse(yaml: yaml, baseDirectory: ConfigFixture.directory)
            }
        } catch {
            require(!error.message.isEmpty, "a config error without a message: \(error)")
        }
    }

    private static func mayNameOutsideFiles(_ yaml: String) -> Bool {
        guard let node = try? Yams.compose(yaml: yaml) else { return false }
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
