import Foundation

/// How to reach a Git remote, and who Relay is to it.
public struct GitCredentials: Sendable, Equatable {
    /// HTTP user name (GitLab accepts any non-empty name with a token; `oauth2` is customary).
    public var username: String?
    /// HTTP password or access token.
    public var password: String?
    /// SSH private key file (PEM or OpenSSH format, as the linked libssh2 supports).
    public var sshPrivateKey: String?
    /// SSH public key file; derived from the private key when nil.
    public var sshPublicKey: String?
    public var sshPassphrase: String?
    /// known_hosts file for SSH host key checks; `~/.ssh/known_hosts` when nil.
    public var knownHosts: String?

    public init(username: String? = nil, password: String? = nil, sshPrivateKey: String? = nil,
                sshPublicKey: String? = nil, sshPassphrase: String? = nil, knownHosts: String? = nil) {
        self.username = username
        self.password = password
        self.sshPrivateKey = sshPrivateKey
        self.sshPublicKey = sshPublicKey
        self.sshPassphrase = sshPassphrase
        self.knownHosts = knownHosts
    }
}

/// A remote as given by the user (URL, scp-like address or local path), with the parts Relay
/// needs: the string libgit2 gets, a credential-free identity for caches and messages, and
/// the SSH host and port for known_hosts.
public struct RemoteLocation: Sendable, Equatable, CustomStringConvertible {
    public enum Transport: String, Sendable { case local, file, git, http, https, ssh }

    /// What libgit2 is given.
    public let url: String
    /// Identity without credentials: cache keys, the store index, log lines.
    public let identity: String
    public let transport: Transport
    /// SSH host and port (for known_hosts), nil for other transports.
    public let sshHost: String?
    public let sshPort: Int
    /// User name embedded in the URL, if any.
    public let urlUser: String?

    public init(_ text: String, relativeTo base: String = FileManager.default.currentDirectoryPath) throws(ArtifactMirrorError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw .invalidArgument("the repository URL or path is empty") }
        if let schemeEnd = trimmed.range(of: "://") {
            let scheme = trimmed[..<schemeEnd.lowerBound].lowercased()
            guard let transport = Transport(rawValue: scheme), transport != .local,
                  let components = URLComponents(string: trimmed) else {
                throw .invalidArgument("unsupported repository URL '\(Self.redact(trimmed))': "
                    + "use https://, http://, ssh://, git://, file:// or a local path")
            }
            self.transport = transport
            url = trimmed
            urlUser = components.user
            var clean = components
            clean.password = nil
            if transport == .http || transport == .https { clean.user = nil }
            identity = clean.string ?? Self.redact(trimmed)
            sshHost = transport == .ssh ? components.host : nil
            sshPort = components.port ?? 22
        } else if let colon = trimmed.firstIndex(of: ":"), !trimmed.hasPrefix("/"), !trimmed.hasPrefix("."),
                  !trimmed[..<colon].contains("/") {
            // scp-like: [user@]host:path
            transport = .ssh
            url = trimmed
            identity = trimmed
            let hostPart = trimmed[..<colon]
            if let at = hostPart.lastIndex(of: "@") {
                urlUser = String(hostPart[..<at])
                sshHost = String(hostPart[hostPart.index(after: at)...])
            } else {
                urlUser = nil
                sshHost = String(hostPart)
            }
            sshPort = 22
        } else {
            transport = .local
            let absolute = trimmed.hasPrefix("/") ? trimmed : (base as NSString).appendingPathComponent(trimmed)
            let standardized = (absolute as NSString).standardizingPath
            url = standardized
            identity = standardized
            sshHost = nil
            sshPort = 22
            urlUser = nil
        }
    }

    public var description: String { identity }

    /// Removes a password from a URL-ish string for messages.
    static func redact(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://"), let at = text[schemeEnd.upperBound...].firstIndex(of: "@") else {
            return text
        }
        return String(text[..<schemeEnd.upperBound]) + "***@" + String(text[text.index(after: at)...])
    }
}
