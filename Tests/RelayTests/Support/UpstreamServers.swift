import Foundation

/// A static Helm chart repository: lighttpd serving a directory (index.yaml and the charts
/// beside it) on 127.0.0.1, with HTTP Basic auth when a user is given.
final class HelmRepoServer: Sendable {
    let root: URL
    let port: Int
    let directory: TemporaryDirectory
    private let process: BackgroundProcess

    init(root: URL, username: String? = nil, password: String? = nil) throws {
        let directory = try TemporaryDirectory(prefix: "helm-repo")
        let lighttpd = findExecutable("lighttpd") ?? "/usr/sbin/lighttpd"
        let userFile = directory.appending("users")
        if let username, let password { try "\(username):\(password)\n".write(to: userFile, atomically: true, encoding: .utf8) }
        do {
            (port, process) = try startServer(name: "lighttpd") { port in
                var lines = [
                    "server.modules = (\(username == nil ? "" : "\"mod_auth\", \"mod_authn_file\""))",
                    "server.bind = \"127.0.0.1\"",
                    "server.port = \(port)",
                    "server.document-root = \"\(root.path)\"",
                    "mimetype.assign = (\".yaml\" => \"text/yaml\", \".tgz\" => \"application/gzip\", \"\" => \"application/octet-stream\")",
                ]
                if username != nil {
                    lines += [
                        "auth.backend = \"plain\"",
                        "auth.backend.plain.userfile = \"\(userFile.path)\"",
                        "auth.require = (\"/\" => (\"method\" => \"basic\", \"realm\" => \"charts\", \"require\" => \"valid-user\"))",
                        "server.feature-flags = (\"auth.delay-invalid-creds\" => \"disable\")",
                    ]
                }
                let conf = directory.appending("lighttpd.\(port).conf")
                try (lines.joined(separator: "\n") + "\n").write(to: conf, atomically: true, encoding: .utf8)
                return try BackgroundProcess(name: "lighttpd", executable: lighttpd, arguments: ["-D", "-f", conf.path],
                                             logFile: directory.appending("lighttpd.\(port).log"))
            }
        } catch {
            directory.remove()
            throw error
        }
        self.root = root
        self.directory = directory
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() {
        process.stop()
        directory.remove()
    }
}

/// The CNCF distribution registry (Debian's `docker-registry`) on 127.0.0.1, plain HTTP, with
/// htpasswd (bcrypt) Basic auth when a user is given. Its storage is a directory of ours, so a
/// test can damage a stored blob the way a tampered registry would serve it.
final class OCIRegistryServer: Sendable {
    let port: Int
    let storage: URL
    let directory: TemporaryDirectory
    let credentials: String?
    private let process: BackgroundProcess

    /// With `token`, the registry sends clients to that token service (`auth: token`) instead
    /// of checking Basic credentials itself; `username`/`password` are then what the token
    /// service accepts (for pushes).
    init(username: String? = nil, password: String? = nil, token: RegistryTokenServer? = nil) throws {
        let directory = try TemporaryDirectory(prefix: "oci-registry")
        let registry = findExecutable("docker-registry") ?? "/usr/bin/docker-registry"
        let storage = try directory.subdirectory("storage")
        var auth = ""
        if let token {
            auth = "auth: {token: {realm: \"\(token.realm)\", service: \(token.service), issuer: \(token.issuer), rootcertbundle: \(token.certificate.path)}}\n"
        } else if let username, let password {
            let htpasswd = try runProcess(findExecutable("htpasswd") ?? "/usr/bin/htpasswd", ["-Bbn", username, password])
            try htpasswd.stdout.write(to: directory.appending("htpasswd"), atomically: true, encoding: .utf8)
            auth = "auth: {htpasswd: {realm: relay-tests, path: \(directory.appending("htpasswd").path)}}\n"
        }
        do {
            (port, process) = try startServer(name: "docker-registry") { port in
                let config = directory.appending("config.\(port).yml")
                try """
                    version: 0.1
                    log: {level: warn, accesslog: {disabled: true}}
                    storage: {filesystem: {rootdirectory: \(storage.path)}, delete: {enabled: true}, cache: {}}
                    http: {addr: 127.0.0.1:\(port), secret: relay-tests-secret}
                    \(auth)
                    """.write(to: config, atomically: true, encoding: .utf8)
                return try BackgroundProcess(name: "docker-registry", executable: registry, arguments: ["serve", config.path],
                                             logFile: directory.appending("registry.\(port).log"))
            }
        } catch {
            directory.remove()
            throw error
        }
        self.storage = storage
        self.directory = directory
        credentials = username.map { "\($0):\(password ?? "")" }
    }

    var host: String { "127.0.0.1:\(port)" }

    /// `skopeo copy --preserve-digests` of an OCI layout's tag into `repository:tag`.
    func push(layout: URL, tag: String, to repository: String) throws {
        let skopeo = findExecutable("skopeo") ?? "/usr/bin/skopeo"
        var arguments = ["copy", "--preserve-digests", "--dest-tls-verify=false"]
        if let credentials { arguments += ["--dest-creds", credentials] }
        arguments += ["oci:\(layout.path):\(tag)", "docker://\(host)/\(repository):\(tag)"]
        _ = try runProcess(skopeo, arguments, timeout: 60)
    }

    /// The file holding a stored blob's bytes.
    func blobFile(_ digest: String) -> URL {
        let hex = String(digest.dropFirst(7))
        return storage.appendingPathComponent("docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data")
    }

    func stop() {
        process.stop()
        directory.remove()
    }
}

/// The distribution spec's token service (Fixtures/helm/token_server.py) on 127.0.0.1: issues
/// ES256 JWTs for a docker-registry in `auth: token` mode to whoever sends its one user's
/// Basic credentials; counts what it issued and refused (`stats()`).
final class RegistryTokenServer: Sendable {
    let port: Int
    let certificate: URL
    let directory: TemporaryDirectory
    let service = "relay-tests"
    let issuer = "relay-test-issuer"
    private let process: BackgroundProcess

    init(username: String, password: String) throws {
        let directory = try TemporaryDirectory(prefix: "registry-token")
        let python = try InteropTests.python()
        let portFile = directory.appending("port")
        certificate = directory.appending("token-ca.pem")
        process = try BackgroundProcess(
            name: "token-server", executable: python,
            arguments: [FluxOCITests.fixture("helm/token_server.py"), portFile.path, certificate.path, username, password, service, issuer],
            logFile: directory.appending("token-server.log"))
        let start = Date()
        var port: Int?
        while port == nil, Date().timeIntervalSince(start) < 30 {
            port = (try? String(contentsOf: portFile, encoding: .utf8)).flatMap { Int($0) }
            if port == nil { Thread.sleep(forTimeInterval: 0.05) }
        }
        guard let port else {
            process.stop()
            defer { directory.remove() }
            throw TestProcessError.serverFailedToStart(server: "token-server", reason: "no port after 30 s", log: process.log())
        }
        self.port = port
        self.directory = directory
    }

    var realm: String { "http://127.0.0.1:\(port)/token" }

    /// Tokens issued and requests refused so far.
    func stats() throws -> (issued: Int, refused: Int) {
        let json = try HTTPProbe.request("http://127.0.0.1:\(port)/stats").json ?? [:]
        return (json["issued"] as? Int ?? 0, json["refused"] as? Int ?? 0)
    }

    func stop() {
        process.stop()
        directory.remove()
    }
}
