// OpenSSH sshd on 127.0.0.1 with its own host key and a generated client key,
// serving the repositories under `root` (by absolute path) over ssh://.
//
// Key types matter for libgit2 1.5.1 + libssh2 1.10 (Debian 12) against
// OpenSSH 9.2: libssh2 1.10 only signs/verifies RSA with SHA-1 ("ssh-rsa"),
// which OpenSSH 9.x disables by default, so RSA host keys fail key exchange
// and RSA client keys are refused. ECDSA (the default here) and Ed25519 work
// for both; `.rsa` works only with `allowLegacySSHRSA: true`.

import Foundation

enum SSHKeyType: String, Sendable, CaseIterable {
    case ecdsa, ed25519, rsa

    fileprivate var keygenArguments: [String] {
        switch self {
        case .ecdsa: return ["-t", "ecdsa", "-b", "256", "-m", "PEM"]  // "BEGIN EC PRIVATE KEY"
        case .ed25519: return ["-t", "ed25519"]  // OpenSSH format only
        case .rsa: return ["-t", "rsa", "-b", "3072", "-m", "PEM"]  // "BEGIN RSA PRIVATE KEY"
        }
    }
}

final class SSHGitServer: Sendable {
    let root: URL
    let port: Int
    /// The login user (the user running the tests; root in CI).
    let username: String
    /// Scratch directory with keys, config, known_hosts and log; removed by `stop()`.
    let directory: TemporaryDirectory
    /// Client key pair authorized for `username` (no passphrase).
    let clientPrivateKey: URL
    let clientPublicKey: URL
    /// known_hosts with `[127.0.0.1]:<port>` and `[localhost]:<port>` lines.
    let knownHostsFile: URL
    /// Host key algorithm name, e.g. "ecdsa-sha2-nistp256", and its public blob.
    let hostKeyType: String
    let hostKeyBase64: String
    /// Raw public host key blob: equals libgit2's `git_cert_hostkey.hostkey`
    /// (GIT_CERT_SSH_RAW) in the certificate_check callback.
    let hostKeyBlob: Data
    private let process: BackgroundProcess

    /// Start `/usr/sbin/sshd -D -e -f <config>` on a free loopback port and wait
    /// (≤ `timeout` s) until it accepts connections. `allowLegacySSHRSA` adds
    /// `HostKeyAlgorithms/PubkeyAcceptedAlgorithms +ssh-rsa` (needed for
    /// libssh2 1.10 with RSA keys).
    init(root: URL, hostKeyType: SSHKeyType = .ecdsa, clientKeyType: SSHKeyType = .ecdsa,
         allowLegacySSHRSA: Bool = false, timeout: Double = 10) throws {
        let root = root.standardizedFileURL.resolvingSymlinksInPath()
        let directory = try TemporaryDirectory(prefix: "git-ssh")
        do {
            let sshd = "/usr/sbin/sshd"  // sshd must be started by absolute path
            guard FileManager.default.isExecutableFile(atPath: sshd) else {
                throw TestProcessError.serverFailedToStart(server: "sshd", reason: "\(sshd) not found", log: "")
            }
            // Privilege separation directory; missing in fresh containers.
            if !FileManager.default.fileExists(atPath: "/run/sshd") {
                try? FileManager.default.createDirectory(
                    atPath: "/run/sshd", withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o755])
            }
            let hostKey = directory.appending("ssh_host_key")
            clientPrivateKey = directory.appending("client_key")
            clientPublicKey = directory.appending("client_key.pub")
            knownHostsFile = directory.appending("known_hosts")
            try Self.keygen(hostKeyType, to: hostKey, comment: "relay-test-host")
            try Self.keygen(clientKeyType, to: clientPrivateKey, comment: "relay-test-client")
            let authorizedKeys = directory.appending("authorized_keys")
            try FileManager.default.copyItem(at: clientPublicKey, to: authorizedKeys)

            let hostPub = try String(contentsOf: hostKey.appendingPathExtension("pub"), encoding: .utf8)
            let fields = hostPub.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let blob = Data(base64Encoded: String(fields[1])) else {
                throw TestProcessError.serverFailedToStart(
                    server: "sshd", reason: "cannot parse host public key: \(hostPub)", log: "")
            }
            let hostKeyAlgorithm = String(fields[0])
            self.hostKeyType = hostKeyAlgorithm
            hostKeyBase64 = String(fields[1])
            hostKeyBlob = blob
            username = Self.currentUserName()

            let logDir = directory
            (port, process) = try startServer(name: "sshd", timeout: timeout) { port in
                let config = logDir.appending("sshd_config.\(port)")
                var lines = [
                    "ListenAddress 127.0.0.1:\(port)",
                    "HostKey \(hostKey.path)",
                    "PidFile \(logDir.appending("sshd.\(port).pid").path)",
                    "AuthorizedKeysFile \(authorizedKeys.path)",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "HostbasedAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel VERBOSE",
                ]
                if allowLegacySSHRSA {
                    lines += ["HostKeyAlgorithms +ssh-rsa", "PubkeyAcceptedAlgorithms +ssh-rsa"]
                }
                try (lines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
                return try BackgroundProcess(
                    name: "sshd", executable: sshd, arguments: ["-D", "-e", "-f", config.path],
                    logFile: logDir.appending("sshd.\(port).log"))
            }
            let key = "\(hostKeyAlgorithm) \(fields[1])"
            try "[127.0.0.1]:\(port) \(key)\n[localhost]:\(port) \(key)\n"
                .write(to: knownHostsFile, atomically: true, encoding: .utf8)
        } catch {
            directory.remove()
            throw error
        }
        self.root = root
        self.directory = directory
    }

    /// libgit2's `git_cert_ssh_raw_type_t` for the host key (`raw_type` in the
    /// certificate_check callback): RSA 1, DSS 2, ECDSA_256 3, ECDSA_384 4,
    /// ECDSA_521 5, ED25519 6 (0 unknown). Verified: ecdsa → 3, ed25519 → 6, rsa → 1.
    var hostKeyLibgit2RawType: Int {
        ["ssh-rsa": 1, "ssh-dss": 2, "ecdsa-sha2-nistp256": 3, "ecdsa-sha2-nistp384": 4,
         "ecdsa-sha2-nistp521": 5, "ssh-ed25519": 6][hostKeyType] ?? 0
    }

    private static func keygen(_ type: SSHKeyType, to file: URL, comment: String) throws {
        try runProcess(findExecutable("ssh-keygen") ?? "/usr/bin/ssh-keygen",
                       ["-q"] + type.keygenArguments + ["-N", "", "-C", comment, "-f", file.path])
    }

    private static func currentUserName() -> String {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name {
            return String(cString: name)
        }
        return ProcessInfo.processInfo.environment["USER"] ?? "root"
    }

    /// `ssh://<user>@127.0.0.1:<port><root>/<repoName>`
    func url(for repoName: String) -> String {
        "ssh://\(username)@127.0.0.1:\(port)\(root.path)/\(repoName)"
    }

    /// GIT_SSH_COMMAND for the git CLI: this client key only, strict host key
    /// checking against `knownHostsFile`, no agent, no prompts, no ~/.ssh/config.
    var gitSSHCommand: String {
        func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        return ["ssh", "-F", "/dev/null", "-i", quote(clientPrivateKey.path),
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "UserKnownHostsFile=\(quote(knownHostsFile.path))",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ].joined(separator: " ")
    }

    /// Environment for the git CLI as a client of this server.
    var gitClientEnvironment: [String: String] { ["GIT_SSH_COMMAND": gitSSHCommand] }

    /// sshd's log (stderr with -e, LogLevel VERBOSE) so far.
    func log() -> String { process.log() }

    /// Kill sshd, wait for it, remove its scratch directory (keys included). Idempotent.
    func stop() {
        process.stop()
        directory.remove()
    }
}
