// lighttpd + `git http-backend` (CGI) on 127.0.0.1, optionally with HTTP Basic
// auth and/or TLS from a throwaway test CA.

import Foundation

/// A throwaway CA and a server certificate for `localhost` (SAN DNS:localhost,
/// IP:127.0.0.1) signed by it, generated with the openssl CLI (EC P-256).
struct TestTLS: Sendable {
    /// PEM CA certificate: give it to clients (libgit2:
    /// `git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, caFile, NULL)` — global,
    /// last call wins, see `shared()`; git CLI: `GIT_SSL_CAINFO`).
    let caFile: URL
    let caKeyFile: URL
    /// PEM server certificate and its private key.
    let certFile: URL
    let keyFile: URL

    /// Write ca.pem, ca.key, server.pem, server.key into `directory` (created if needed).
    static func generate(in directory: URL, commonName: String = "localhost") throws -> TestTLS {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let tls = TestTLS(
            caFile: directory.appendingPathComponent("ca.pem"),
            caKeyFile: directory.appendingPathComponent("ca.key"),
            certFile: directory.appendingPathComponent("server.pem"),
            keyFile: directory.appendingPathComponent("server.key"))
        let csr = directory.appendingPathComponent("server.csr")
        let ext = directory.appendingPathComponent("server.ext")
        try """
            subjectAltName = DNS:localhost, IP:127.0.0.1
            basicConstraints = critical, CA:FALSE
            keyUsage = critical, digitalSignature, keyEncipherment
            extendedKeyUsage = serverAuth

            """.write(to: ext, atomically: true, encoding: .utf8)
        let openssl = findExecutable("openssl") ?? "/usr/bin/openssl"
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try runProcess(openssl, ["req", "-x509"] + ec + [
            "-keyout", tls.caKeyFile.path, "-out", tls.caFile.path, "-days", "30",
            "-subj", "/CN=Relay Test CA \(UUID().uuidString.prefix(8))",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try runProcess(openssl, ["req", "-new"] + ec + [
            "-keyout", tls.keyFile.path, "-out", csr.path, "-subj", "/CN=\(commonName)",
        ])
        let serial = "0x" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16)
        try runProcess(openssl, [
            "x509", "-req", "-in", csr.path, "-CA", tls.caFile.path, "-CAkey", tls.caKeyFile.path,
            "-set_serial", String(serial), "-days", "30", "-extfile", ext.path, "-out", tls.certFile.path,
        ])
        return tls
    }

    private static let sharedLock = NSLock()
    nonisolated(unsafe) private static var sharedTLS: TestTLS?
    nonisolated(unsafe) private static var sharedDirectory: TemporaryDirectory?

    /// One CA + localhost certificate per test process, generated on first use
    /// and deleted at process exit. Prefer this in libgit2 tests: Debian's
    /// libgit2 1.5.1 uses mbedTLS, where GIT_OPT_SET_SSL_CERT_LOCATIONS is
    /// process-global and *replaces* the trusted CAs (last call wins), so
    /// parallel tests trusting different CAs would break each other.
    static func shared() throws -> TestTLS {
        try sharedLock.withLock {
            if let sharedTLS { return sharedTLS }
            let dir = try TemporaryDirectory(prefix: "relay-test-tls")
            let tls = try generate(in: dir.url)
            sharedDirectory = dir
            sharedTLS = tls
            atexit { TestTLS.removeShared() }
            return tls
        }
    }

    private static func removeShared() {
        sharedLock.withLock { sharedDirectory?.remove() }
    }
}

final class HTTPGitServer: Sendable {
    let root: URL
    let port: Int
    let username: String?
    let password: String?
    let tls: TestTLS?
    /// Scratch directory (lighttpd.conf, user file, log); removed by `stop()`.
    let directory: TemporaryDirectory
    private let process: BackgroundProcess

    /// Start lighttpd (`-D -f <conf>`) on a free loopback port serving
    /// `git http-backend` at `/git/` for the repositories under `root`.
    /// With `username`/`password`, every request needs HTTP Basic auth; with
    /// `tls`, the server speaks HTTPS using `tls.certFile`/`tls.keyFile`.
    init(root: URL, username: String? = nil, password: String? = nil, tls: TestTLS? = nil,
         timeout: Double = 10) throws {
        precondition((username == nil) == (password == nil), "give both username and password, or neither")
        let root = root.standardizedFileURL.resolvingSymlinksInPath()
        let directory = try TemporaryDirectory(prefix: "git-http")
        do {
            let lighttpd = findExecutable("lighttpd") ?? "/usr/sbin/lighttpd"
            let execPath = try git(["--exec-path"])
            let backend = "\(execPath)/git-http-backend"
            guard FileManager.default.isExecutableFile(atPath: backend) else {
                throw TestProcessError.serverFailedToStart(
                    server: "lighttpd", reason: "git-http-backend not found at \(backend)", log: "")
            }
            let htdocs = try directory.subdirectory("htdocs")
            let uploads = try directory.subdirectory("uploads")
            let userFile = directory.appending("users")
            if let username, let password {
                try "\(username):\(password)\n".write(to: userFile, atomically: true, encoding: .utf8)
            }
            (port, process) = try startServer(name: "lighttpd", timeout: timeout) { port in
                let conf = directory.appending("lighttpd.\(port).conf")
                try Self.config(
                    port: port, root: root, backend: backend, htdocs: htdocs, uploads: uploads,
                    userFile: username == nil ? nil : userFile, tls: tls
                ).write(to: conf, atomically: true, encoding: .utf8)
                return try BackgroundProcess(
                    name: "lighttpd", executable: lighttpd, arguments: ["-D", "-f", conf.path],
                    logFile: directory.appending("lighttpd.\(port).log"))
            }
        } catch {
            directory.remove()
            throw error
        }
        self.root = root
        self.username = username
        self.password = password
        self.tls = tls
        self.directory = directory
    }

    private static func config(port: Int, root: URL, backend: String, htdocs: URL, uploads: URL,
                               userFile: URL?, tls: TestTLS?) -> String {
        var modules = ["mod_alias", "mod_setenv"]
        if userFile != nil { modules += ["mod_auth", "mod_authn_file"] }
        modules.append("mod_cgi")
        if tls != nil { modules.append("mod_openssl") }
        var lines = [
            "server.modules = (\(modules.map { "\"\($0)\"" }.joined(separator: ", ")))",
            "server.bind = \"127.0.0.1\"",
            "server.port = \(port)",
            "server.document-root = \"\(htdocs.path)\"",
            "server.upload-dirs = (\"\(uploads.path)\")",
            "alias.url = (\"/git/\" => \"\(backend)/\")",
            "$HTTP[\"url\"] =~ \"^/git/\" {",
            "  cgi.assign = (\"\" => \"\")",
            "  setenv.add-environment = (",
            "    \"GIT_PROJECT_ROOT\" => \"\(root.path)\",",
            "    \"GIT_HTTP_EXPORT_ALL\" => \"1\",",
            "  )",
            "}",
        ]
        if let userFile {
            lines += [
                "auth.backend = \"plain\"",
                "auth.backend.plain.userfile = \"\(userFile.path)\"",
                "auth.require = (\"/git/\" => (\"method\" => \"basic\", \"realm\" => \"git\", \"require\" => \"valid-user\"))",
                // lighttpd otherwise delays every 401 for wrong credentials by ~1 s.
                "server.feature-flags = (\"auth.delay-invalid-creds\" => \"disable\")",
            ]
        }
        if let tls {
            lines += [
                "ssl.engine = \"enable\"",
                "ssl.pemfile = \"\(tls.certFile.path)\"",
                "ssl.privkey = \"\(tls.keyFile.path)\"",
            ]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    var scheme: String { tls == nil ? "http" : "https" }

    /// `http(s)://localhost:<port>/git/<repoName>` (`localhost`, not the IP:
    /// libgit2's certificate name check does not match IP SANs).
    func url(for repoName: String) -> String { "\(scheme)://localhost:\(port)/git/\(repoName)" }

    /// Same URL with `user:password@` embedded (percent-encoded), for the git CLI.
    func url(for repoName: String, username: String, password: String) -> String {
        let allowed = CharacterSet.urlUserAllowed.subtracting(CharacterSet(charactersIn: ":@/"))
        let user = username.addingPercentEncoding(withAllowedCharacters: allowed) ?? username
        let pass = password.addingPercentEncoding(withAllowedCharacters: allowed) ?? password
        return "\(scheme)://\(user):\(pass)@localhost:\(port)/git/\(repoName)"
    }

    /// Environment for the git CLI as a client (trusts the test CA when TLS is on).
    var gitClientEnvironment: [String: String] {
        tls.map { ["GIT_SSL_CAINFO": $0.caFile.path] } ?? [:]
    }

    /// lighttpd's stdout/stderr (its error log) so far.
    func log() -> String { process.log() }

    /// Kill lighttpd, wait for it, remove its scratch directory. Idempotent.
    func stop() {
        process.stop()
        directory.remove()
    }
}
