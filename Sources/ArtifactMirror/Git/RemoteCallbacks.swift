import CLibGit2
import Foundation

/// Progress of a fetch, as libgit2 reports it.
public struct FetchProgress: Sendable {
    public var receivedObjects: Int
    public var totalObjects: Int
    public var indexedDeltas: Int
    public var totalDeltas: Int
    public var receivedBytes: Int
}

/// The state behind libgit2's remote callbacks for one fetch: credentials, host-key check,
/// progress, and what went wrong (libgit2 only sees a negative return code).
///
/// Confinement: used on the thread that runs the fetch; libgit2 calls back on that thread.
final class RemoteCallbacks {
    let location: RemoteLocation
    let credentials: GitCredentials
    let onProgress: ((FetchProgress) -> Void)?
    private var attempts: [UInt32: Int] = [:]
    private(set) var authenticationFailure: String?
    private(set) var hostKeyFailure: String?
    private var knownHosts: KnownHosts?

    init(location: RemoteLocation, credentials: GitCredentials, onProgress: ((FetchProgress) -> Void)?) {
        self.location = location
        self.credentials = credentials
        self.onProgress = onProgress
    }

    /// Fills libgit2's callback table. `self` must outlive every libgit2 call using it.
    func install(into callbacks: inout git_remote_callbacks) {
        callbacks.payload = Unmanaged.passUnretained(self).toOpaque()
        callbacks.credentials = { out, _, usernameFromURL, allowed, payload in
            let this = Unmanaged<RemoteCallbacks>.fromOpaque(payload!).takeUnretainedValue()
            return this.acquireCredential(out, usernameFromURL.map { String(cString: $0) }, allowed)
        }
        callbacks.certificate_check = { cert, valid, host, payload in
            let this = Unmanaged<RemoteCallbacks>.fromOpaque(payload!).takeUnretainedValue()
            return this.checkCertificate(cert, valid: valid != 0, host: host.map { String(cString: $0) } ?? "")
        }
        callbacks.transfer_progress = { stats, payload in
            let this = Unmanaged<RemoteCallbacks>.fromOpaque(payload!).takeUnretainedValue()
            if let stats, let report = this.onProgress {
                let s = stats.pointee
                report(FetchProgress(receivedObjects: Int(s.received_objects), totalObjects: Int(s.total_objects),
                                     indexedDeltas: Int(s.indexed_deltas), totalDeltas: Int(s.total_deltas),
                                     receivedBytes: Int(s.received_bytes)))
            }
            return 0
        }
    }

    private func acquireCredential(_ out: UnsafeMutablePointer<UnsafeMutablePointer<git_credential>?>?,
                                   _ usernameFromURL: String?, _ allowed: UInt32) -> Int32 {
        let sshKey = GIT_CREDENTIAL_SSH_KEY.rawValue
        let plaintext = GIT_CREDENTIAL_USERPASS_PLAINTEXT.rawValue
        let usernameOnly = GIT_CREDENTIAL_USERNAME.rawValue
        let kind: UInt32 = allowed & sshKey != 0 && credentials.sshPrivateKey != nil ? sshKey
            : allowed & plaintext != 0 && credentials.password != nil ? plaintext
            : allowed & usernameOnly != 0 ? usernameOnly : 0
        attempts[kind, default: 0] += 1
        if kind == 0 {
            authenticationFailure = allowed & plaintext != 0
                ? "the server asks for a user name and password or token, and none was given"
                : allowed & sshKey != 0 ? "the server asks for an SSH key, and none was given (--ssh-key)"
                : "the server asks for credentials of a kind Relay does not support"
            return GIT_EUSER.rawValue
        }
        if attempts[kind]! > 1 {
            // libgit2 asks again after a rejection; asking forever would loop.
            authenticationFailure = kind == sshKey
                ? "the server rejected the SSH key \(credentials.sshPrivateKey ?? "")"
                : kind == plaintext ? "the server rejected the user name and password/token"
                : "the server rejected the user name"
            return GIT_EUSER.rawValue
        }
        let user = usernameFromURL ?? credentials.username ?? (kind == plaintext ? "oauth2" : "git")
        switch kind {
        case sshKey:
            return git_credential_ssh_key_new(out, user, credentials.sshPublicKey, credentials.sshPrivateKey,
                                              credentials.sshPassphrase ?? "")
        case plaintext:
            return git_credential_userpass_plaintext_new(out, credentials.username ?? user, credentials.password)
        default:
            return git_credential_username_new(out, user)
        }
    }

    private func checkCertificate(_ cert: UnsafeMutablePointer<git_cert>?, valid: Bool, host: String) -> Int32 {
        guard let cert else { return GIT_ECERTIFICATE.rawValue }
        guard cert.pointee.cert_type == GIT_CERT_HOSTKEY_LIBSSH2 else {
            return GIT_PASSTHROUGH.rawValue  // TLS: libgit2's own verification against the CA bundle
        }
        let hostkey = UnsafeMutableRawPointer(cert).assumingMemoryBound(to: git_cert_hostkey.self).pointee
        guard hostkey.type.rawValue & GIT_CERT_SSH_RAW.rawValue != 0, let raw = hostkey.hostkey else {
            hostKeyFailure = "the SSH library did not provide the raw host key"
            return GIT_ECERTIFICATE.rawValue
        }
        let key = Data(bytes: raw, count: hostkey.hostkey_len)
        let path = credentials.knownHosts ?? (NSHomeDirectory() as NSString).appendingPathComponent(".ssh/known_hosts")
        let hostName = location.sshHost ?? host
        let name = KnownHosts.lookupName(host: hostName, port: location.sshPort)
        let fix = "ssh-keyscan -p \(location.sshPort) \(hostName) >> \(path)"
        let table: KnownHosts
        do { table = try KnownHosts(path: path) } catch {
            hostKeyFailure = "\(error)"
            return GIT_ECERTIFICATE.rawValue
        }
        switch table.verify(host: hostName, port: location.sshPort, key: key) {
        case .trusted:
            return 0
        case .unknownHost:
            hostKeyFailure = "\(name) is not in \(path); after checking its fingerprint, add it with: \(fix)"
        case .revoked:
            hostKeyFailure = "the host key of \(name) is marked @revoked in \(path)"
        case .mismatch(let types):
            hostKeyFailure = "the host key of \(name) does not match the one recorded in \(path) "
                + "(\(types.joined(separator: ", "))): possible man-in-the-middle, or the server's key changed; "
                + "if the change is expected, replace the line for \(name)"
        }
        return GIT_ECERTIFICATE.rawValue
    }
}
