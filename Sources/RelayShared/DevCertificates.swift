// Development TLS material for the relay's "run on embedded defaults" mode:
// a private CA, a server certificate for the names the relay answers on, and
// client certificates for mTLS tests. Nothing here is meant for production.

import Crypto
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Development TLS material kept in one directory: a private CA and a server
/// certificate signed by it, created on first use and reused afterwards.
///
/// Files (all PEM, readable by swift-nio-ssl/BoringSSL and `openssl`):
///
/// | file              | contents                                               | mode |
/// |-------------------|--------------------------------------------------------|------|
/// | `ca.pem`          | the CA certificate (P-256, 10 years, `CA:TRUE`)         | 0644 |
/// | `ca-key.pem`      | the CA private key (PKCS#8)                             | 0600 |
/// | `server.pem`      | the server certificate only (the leaf, no chain)        | 0644 |
/// | `server-key.pem`  | the server private key (PKCS#8)                         | 0600 |
/// | `client-NAME.pem`, `client-NAME-key.pem` | from ``issueClientCertificate(commonName:)`` | 0644 / 0600 |
/// | `.lock`           | empty; serializes concurrent `ensure` calls (`flock`)   | 0600 |
///
/// `server.pem` holds just the leaf: clients must trust `ca.pem` (there is no
/// intermediate, so nothing else would be needed in the chain).
///
/// All values are immutable; the type only names files, so it is `Sendable`.
public struct DevCertificates: Sendable {
    /// The directory holding the files.
    public let directory: URL

    /// The CA certificate, `ca.pem`. Give this to clients as their trust root.
    public var caCertificate: URL { directory.appendingPathComponent(Self.caCertificateName) }
    /// The CA private key, `ca-key.pem` (mode 0600).
    public var caKey: URL { directory.appendingPathComponent(Self.caKeyName) }
    /// The server certificate, `server.pem`: the leaf only, signed directly by the CA.
    public var serverCertificate: URL { directory.appendingPathComponent(Self.serverCertificateName) }
    /// The server private key, `server-key.pem` (mode 0600).
    public var serverKey: URL { directory.appendingPathComponent(Self.serverKeyName) }

    /// Validity of a newly created CA certificate.
    static let caLifetime: TimeInterval = 10 * 365 * 86_400
    /// Validity of a newly issued server or client certificate (capped at the CA's expiry).
    static let leafLifetime: TimeInterval = 365 * 86_400
    /// Certificates start this long before "now", to tolerate clock skew between hosts.
    static let backdating: TimeInterval = 3_600
    /// A certificate that expires within this margin is replaced.
    static let renewalMargin: TimeInterval = 30 * 86_400
    /// How long `ensure` waits for another process holding the directory's lock.
    static let lockTimeout: TimeInterval = 30

    static let caCertificateName = "ca.pem"
    static let caKeyName = "ca-key.pem"
    static let serverCertificateName = "server.pem"
    static let serverKeyName = "server-key.pem"
    static let lockName = ".lock"

    init(directory: URL) {
        self.directory = directory
    }

    /// Loads what is there, or creates a CA (P-256, 10 years) and a server certificate
    /// (P-256, 1 year, signed by the CA) for the given DNS names and IP addresses.
    ///
    /// The directory is created (mode 0700) if needed. An existing CA is always kept;
    /// it is replaced only when `ca.pem` is missing or the CA has expired or expires
    /// within 30 days (then the server certificate is replaced too, and clients must be
    /// given the new `ca.pem`). The server certificate and key are replaced when either
    /// file is missing or unreadable, the key does not match the certificate, the
    /// certificate was not issued by the current CA, it is expired, not yet valid or
    /// expires within 30 days, or its subject alternative names do not cover all of
    /// `dnsNames` and `ipAddresses`. Otherwise no file is touched (private keys with
    /// looser permissions than 0600 are tightened to 0600).
    ///
    /// Every file is written atomically (a temporary file in the same directory, then
    /// `rename`), so a crash never leaves a half-written file behind. Concurrent calls
    /// for the same directory, also from different processes, are serialized with
    /// `flock` on `.lock`.
    ///
    /// - Parameters:
    ///   - directory: Where the files live.
    ///   - dnsNames: DNS names the server certificate must cover (ASCII; wildcards such
    ///     as `*.example.test` are allowed). Matched case-insensitively.
    ///   - ipAddresses: IPv4 or IPv6 addresses (`"127.0.0.1"`, `"::1"`) it must cover.
    /// - Throws: ``DevCertificatesError`` when a name is invalid, when an existing CA
    ///   cannot be used (unreadable, or its key is missing or does not match), or when a
    ///   file cannot be written.
    public static func ensure(
        in directory: URL,
        dnsNames: [String] = ["localhost"],
        ipAddresses: [String] = ["127.0.0.1", "::1"]
    ) throws -> DevCertificates {
        try ensure(in: directory, dnsNames: dnsNames, ipAddresses: ipAddresses, now: Date())
    }

    /// ``ensure(in:dnsNames:ipAddresses:)`` with an explicit clock, so tests can create
    /// material that is already old.
    static func ensure(
        in directory: URL,
        dnsNames: [String],
        ipAddresses: [String],
        now: Date
    ) throws -> DevCertificates {
        let names = try SubjectAlternativeNames(requestedDNSNames: dnsNames, ipAddresses: ipAddresses)
        let certificates = DevCertificates(directory: directory)
        try FileIO.createDirectory(directory)
        return try FileIO.withLock(at: directory.appendingPathComponent(lockName), timeout: lockTimeout) {
            let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
            let ca = try certificates.loadOrCreateCA(now: now)
            try certificates.ensureServerCertificate(names: names, ca: ca, now: now)
            return certificates
        }
    }

    /// Issue an extra client certificate signed by the same CA (for mTLS tests): returns (certPEM URL, keyPEM URL).
    ///
    /// Writes `client-NAME.pem` and `client-NAME-key.pem` (0600) into ``directory``, where
    /// NAME is `commonName` with every character other than ASCII letters, digits, `.`,
    /// `-` and `_` replaced by `_` (and a `_` appended if it ends in `-key`, so that no
    /// certificate file can be another one's key file). An earlier certificate for the
    /// same NAME is replaced.
    /// The certificate (P-256, 1 year, capped at the CA's expiry) has the given common
    /// name, `extendedKeyUsage clientAuth`, `keyUsage digitalSignature` and `CA:FALSE`.
    ///
    /// - Parameter commonName: The subject's common name, 1 to 64 characters.
    /// - Throws: ``DevCertificatesError`` when the name is empty or too long, when there
    ///   is no usable CA in ``directory`` (call ``ensure(in:dnsNames:ipAddresses:)``
    ///   first), or when a file cannot be written.
    public func issueClientCertificate(commonName: String) throws -> (certificate: URL, key: URL) {
        guard !commonName.isEmpty, commonName.count <= 64 else {
            throw DevCertificatesError.invalidCommonName(commonName)
        }
        var name = String(commonName.unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", ".", "-", "_": return Character(scalar)
            default: return "_"
            }
        })
        if name.hasSuffix("-key") { name += "_" }
        let fileStem = "client-" + name
        let certificateURL = directory.appendingPathComponent(fileStem + ".pem")
        let keyURL = directory.appendingPathComponent(fileStem + "-key.pem")
        guard FileIO.exists(caCertificate) else {
            throw DevCertificatesError.noCA(directory: directory.path)
        }
        return try FileIO.withLock(at: directory.appendingPathComponent(Self.lockName), timeout: Self.lockTimeout) {
            let ca = try loadExistingCA()
            let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            guard ca.certificate.notValidAfter > now else {
                throw DevCertificatesError.caExpired(certificate: caCertificate.path)
            }
            let key = P256.Signing.PrivateKey()
            let certificate = try Self.issueLeaf(key: key, commonName: commonName, usage: .clientAuth, extra: [],
                                                 ca: ca, now: now, path: certificateURL.path)
            try Self.write(key: key, to: keyURL)
            try Self.write(certificate: certificate, to: certificateURL)
            return (certificateURL, keyURL)
        }
    }
}

// MARK: - Errors

/// Why development TLS material could not be loaded or created. The descriptions say
/// what to do about it.
public enum DevCertificatesError: Error, CustomStringConvertible, Sendable {
    /// Neither DNS names nor IP addresses were requested.
    case noNames
    /// A requested DNS name cannot go into a certificate.
    case invalidDNSName(String)
    /// A requested IP address is not a literal IPv4 or IPv6 address.
    case invalidIPAddress(String)
    /// A client certificate's common name is empty or longer than 64 characters.
    case invalidCommonName(String)
    /// The directory has no `ca.pem` (client certificates need the CA).
    case noCA(directory: String)
    /// The CA in `ca.pem` has expired (client certificates need a valid CA).
    case caExpired(certificate: String)
    /// `ca.pem` exists but `ca-key.pem` does not.
    case caKeyMissing(certificate: String, key: String)
    /// `ca.pem` or `ca-key.pem` could not be read or parsed.
    case unreadableCA(path: String, reason: String)
    /// `ca-key.pem` is not the key of the certificate in `ca.pem`.
    case caKeyMismatch(certificate: String, key: String)
    /// Another process held the directory's lock for too long.
    case lockTimeout(path: String, seconds: Double)
    /// A file-system or crypto operation failed.
    case operationFailed(operation: String, path: String, reason: String)

    public var description: String {
        switch self {
        case .noNames:
            return "no DNS names or IP addresses given for the development server certificate; "
                + "pass at least one, e.g. dnsNames: [\"localhost\"]"
        case .invalidDNSName(let name):
            return "'\(name)' is not a usable DNS name for a certificate; use ASCII letters, digits, '-', "
                + "'.' (and a leading '*.' for a wildcard); write internationalized names in punycode (xn--...)"
        case .invalidIPAddress(let address):
            return "'\(address)' is not an IPv4 or IPv6 address literal; use e.g. \"127.0.0.1\" or \"::1\" "
                + "(no brackets, ports or zone ids), or pass host names via dnsNames"
        case .invalidCommonName(let name):
            return "client certificate common name '\(name)' must be 1 to 64 characters long"
        case .noCA(let directory):
            return "no development CA in \(directory) (ca.pem is missing); call DevCertificates.ensure(in:) "
                + "for that directory first"
        case .caExpired(let certificate):
            return "the development CA \(certificate) has expired; call DevCertificates.ensure(in:) for its "
                + "directory to create a new one (clients must then be given the new ca.pem)"
        case .caKeyMissing(let certificate, let key):
            return "the development CA certificate \(certificate) exists but its key \(key) is missing; "
                + "restore the key, or delete \(certificate) to create a new CA (clients trusting the old "
                + "CA must then be given the new ca.pem)"
        case .unreadableCA(let path, let reason):
            return "cannot use the development CA file \(path): \(reason); restore it, or delete ca.pem and "
                + "ca-key.pem in that directory to create a new CA (clients trusting the old CA must then be "
                + "given the new ca.pem)"
        case .caKeyMismatch(let certificate, let key):
            return "\(key) is not the private key of the CA certificate \(certificate); restore the matching "
                + "pair, or delete both files to create a new CA (clients trusting the old CA must then be "
                + "given the new ca.pem)"
        case .lockTimeout(let path, let seconds):
            return "another process (a relay server, agent or test using the same directory) held the lock "
                + "\(path) for more than \(Int(seconds))s; stop it or give this process its own certificate "
                + "directory"
        case .operationFailed(let operation, let path, let reason):
            return "could not \(operation) (\(path)): \(reason); check that the directory exists, is writable "
                + "and the disk is not full"
        }
    }
}

// MARK: - CA

extension DevCertificates {
    /// The CA as needed for signing: its certificate, key and key identifier.
    struct CA {
        var certificate: Certificate
        var key: P256.Signing.PrivateKey

        var authorityKeyIdentifier: AuthorityKeyIdentifier {
            let keyIdentifier = (try? certificate.extensions.subjectKeyIdentifier)?.keyIdentifier
                ?? SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier
            return AuthorityKeyIdentifier(keyIdentifier: keyIdentifier)
        }
    }

    /// Loads the CA, or creates one when `ca.pem` is missing or the CA expires within
    /// ``renewalMargin``.
    fileprivate func loadOrCreateCA(now: Date) throws -> CA {
        if FileIO.exists(caCertificate) {
            let ca = try loadExistingCA()
            if ca.certificate.notValidAfter > now + Self.renewalMargin {
                return ca
            }
            // An expiring CA is useless for new certificates; fall through and replace it.
        }
        return try createCA(now: now)
    }

    /// Reads `ca.pem` and `ca-key.pem`, checking that they belong together.
    fileprivate func loadExistingCA() throws -> CA {
        guard FileIO.exists(caKey) else {
            throw DevCertificatesError.caKeyMissing(certificate: caCertificate.path, key: caKey.path)
        }
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: try FileIO.readString(caCertificate))
        } catch {
            throw DevCertificatesError.unreadableCA(path: caCertificate.path, reason: "\(error)")
        }
        let key: P256.Signing.PrivateKey
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: try FileIO.readString(caKey))
        } catch {
            throw DevCertificatesError.unreadableCA(
                path: caKey.path, reason: "not a PEM P-256 private key (\(error))")
        }
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw DevCertificatesError.caKeyMismatch(certificate: caCertificate.path, key: caKey.path)
        }
        try FileIO.restrictPermissions(caKey)
        return CA(certificate: certificate, key: key)
    }

    /// Creates and writes a new CA (key first, certificate last: `ca.pem` marks completion).
    private func createCA(now: Date) throws -> CA {
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let name = try Self.wrap("build the CA name", path: caCertificate.path) {
            try DistinguishedName {
                OrganizationName("Relay development")
                CommonName("Relay Development CA")
            }
        }
        let certificate = try Self.wrap("create the CA certificate", path: caCertificate.path) {
            try Certificate(
                version: .v3,
                serialNumber: Self.randomSerialNumber(),
                publicKey: publicKey,
                notValidBefore: now - Self.backdating,
                notValidAfter: now + Self.caLifetime,
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions([
                    Certificate.Extension(
                        BasicConstraints.isCertificateAuthority(maxPathLength: 0), critical: true),
                    Certificate.Extension(KeyUsage(keyCertSign: true, cRLSign: true), critical: true),
                    Certificate.Extension(SubjectKeyIdentifier(hash: publicKey), critical: false),
                ]),
                issuerPrivateKey: Certificate.PrivateKey(key)
            )
        }
        try Self.write(key: key, to: caKey)
        try Self.write(certificate: certificate, to: caCertificate)
        return CA(certificate: certificate, key: key)
    }
}

// MARK: - Server certificate

extension DevCertificates {
    /// Keeps the current server certificate if it is usable, otherwise issues a new one.
    fileprivate func ensureServerCertificate(names: SubjectAlternativeNames, ca: CA, now: Date) throws {
        if let existing = try? loadServerCertificate(),
            Self.isUsable(existing.certificate, key: existing.key, names: names, ca: ca, now: now)
        {
            try FileIO.restrictPermissions(serverKey)
            return
        }
        try issueServerCertificate(names: names, ca: ca, now: now)
    }

    private func loadServerCertificate() throws -> (certificate: Certificate, key: P256.Signing.PrivateKey) {
        let certificate = try Certificate(pemEncoded: try FileIO.readString(serverCertificate))
        let key = try P256.Signing.PrivateKey(pemRepresentation: try FileIO.readString(serverKey))
        return (certificate, key)
    }

    /// Whether an existing server certificate can stay.
    static func isUsable(
        _ certificate: Certificate, key: P256.Signing.PrivateKey,
        names: SubjectAlternativeNames, ca: CA, now: Date
    ) -> Bool {
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey),
            certificate.issuer == ca.certificate.subject,
            ca.certificate.publicKey.isValidSignature(certificate.signature, for: certificate),
            certificate.notValidBefore <= now,
            certificate.notValidAfter > now + renewalMargin,
            let usages = try? certificate.extensions.extendedKeyUsage,
            usages.contains(.serverAuth),
            let present = try? certificate.extensions.subjectAlternativeNames
        else { return false }
        return Set(names.map(Self.normalized)).isSubset(of: Set(present.map(Self.normalized)))
    }

    /// DNS names compare case-insensitively and without a trailing dot.
    private static func normalized(_ name: GeneralName) -> GeneralName {
        guard case .dnsName(let dnsName) = name else { return name }
        var lowered = dnsName.lowercased()
        if lowered.hasSuffix(".") { lowered.removeLast() }
        return .dnsName(lowered)
    }

    /// Issues and writes a new server certificate and key (key first, then certificate).
    private func issueServerCertificate(names: SubjectAlternativeNames, ca: CA, now: Date) throws {
        let key = P256.Signing.PrivateKey()
        let commonName: String
        switch names.first {
        case .dnsName(let name)?: commonName = name
        default: commonName = "Relay development server"
        }
        let certificate = try Self.issueLeaf(key: key, commonName: commonName, usage: .serverAuth,
                                             extra: [try Certificate.Extension(names, critical: false)],
                                             ca: ca, now: now, path: serverCertificate.path)
        try Self.write(key: key, to: serverKey)
        try Self.write(certificate: certificate, to: serverCertificate)
    }
}

// MARK: - Leaf certificates

extension DevCertificates {
    /// A P-256 leaf certificate signed by the CA: not a CA itself, digital signatures only,
    /// one extended key usage, valid from `backdating` before now for `leafLifetime` (never
    /// past the CA), plus `extra` extensions (e.g. the server's SANs).
    fileprivate static func issueLeaf(key: P256.Signing.PrivateKey, commonName: String, usage: ExtendedKeyUsage.Usage,
                                      extra: [Certificate.Extension], ca: CA, now: Date, path: String) throws -> Certificate {
        let publicKey = Certificate.PublicKey(key.publicKey)
        return try wrap("issue the certificate", path: path) {
            try Certificate(
                version: .v3,
                serialNumber: randomSerialNumber(),
                publicKey: publicKey,
                notValidBefore: now - backdating,
                notValidAfter: min(now + leafLifetime, ca.certificate.notValidAfter),
                issuer: ca.certificate.subject,
                subject: try DistinguishedName {
                    OrganizationName("Relay development")
                    CommonName(commonName)
                },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions([
                    Certificate.Extension(BasicConstraints.notCertificateAuthority, critical: true),
                    Certificate.Extension(KeyUsage(digitalSignature: true), critical: true),
                    Certificate.Extension(try ExtendedKeyUsage([usage]), critical: false),
                ] + extra + [
                    Certificate.Extension(SubjectKeyIdentifier(hash: publicKey), critical: false),
                    Certificate.Extension(ca.authorityKeyIdentifier, critical: false),
                ]),
                issuerPrivateKey: Certificate.PrivateKey(ca.key)
            )
        }
    }
}

// MARK: - Names

extension DevCertificates {
    /// 16 random bytes (CSPRNG) as a positive serial number of exactly 16 octets:
    /// the top bit is cleared (no sign padding, so never over RFC 5280's 20 octets) and
    /// the next one set (no leading zero byte to strip).
    static func randomSerialNumber() -> Certificate.SerialNumber {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        bytes[0] = (bytes[0] & 0x7F) | 0x40
        return Certificate.SerialNumber(bytes: bytes)
    }
}

extension SubjectAlternativeNames {
    /// The subject alternative names for the requested DNS names and IP addresses, in
    /// order, without duplicates; DNS names lowercased and without a trailing dot.
    init(requestedDNSNames dnsNames: [String], ipAddresses: [String]) throws {
        var names: [GeneralName] = []
        var seen = Set<GeneralName>()
        for raw in dnsNames {
            var name = raw.lowercased()
            if name.hasSuffix(".") { name.removeLast() }
            guard Self.isValidDNSName(name) else { throw DevCertificatesError.invalidDNSName(raw) }
            if seen.insert(.dnsName(name)).inserted { names.append(.dnsName(name)) }
        }
        for raw in ipAddresses {
            guard let bytes = Self.parseIPAddress(raw) else { throw DevCertificatesError.invalidIPAddress(raw) }
            let name = GeneralName.ipAddress(ASN1OctetString(contentBytes: bytes[...]))
            if seen.insert(name).inserted { names.append(name) }
        }
        guard !names.isEmpty else { throw DevCertificatesError.noNames }
        self.init(names)
    }

    /// Letters, digits, hyphens and dots in labels of 1...63 characters, optionally with
    /// a leading `*.` wildcard label; at most 253 characters.
    static func isValidDNSName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        var labels = name.split(separator: ".", omittingEmptySubsequences: false)
        if labels.count > 1, labels[0] == "*" { labels.removeFirst() }
        return labels.allSatisfy { label in
            (1...63).contains(label.utf8.count)
                && label.utf8.first != UInt8(ascii: "-") && label.utf8.last != UInt8(ascii: "-")
                && label.utf8.allSatisfy { byte in
                    switch byte {
                    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                        UInt8(ascii: "-"), UInt8(ascii: "_"):
                        return true
                    default:
                        return false
                    }
                }
        }
    }

    /// The 4 or 16 network-order bytes of an IPv4 or IPv6 literal, or nil.
    static func parseIPAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }
}

// MARK: - Files

extension DevCertificates {
    /// Runs `body`, turning any error into ``DevCertificatesError/operationFailed(operation:path:reason:)``.
    fileprivate static func wrap<T>(_ operation: String, path: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DevCertificatesError {
            throw error
        } catch {
            throw DevCertificatesError.operationFailed(operation: operation, path: path, reason: "\(error)")
        }
    }

    fileprivate static func write(certificate: Certificate, to url: URL) throws {
        let pem = try wrap("encode the certificate", path: url.path) { try certificate.serializeAsPEM().pemString }
        try FileIO.writeAtomically(pem + "\n", to: url, mode: 0o644)
    }

    fileprivate static func write(key: P256.Signing.PrivateKey, to url: URL) throws {
        try FileIO.writeAtomically(key.pemRepresentation + "\n", to: url, mode: 0o600)
    }
}

/// The few POSIX file operations this needs: atomic writes with exact permissions,
/// and an inter-process lock.
private enum FileIO {
    static func exists(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.path)
    }

    static func readString(_ url: URL) throws -> String {
        do {
            return try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw DevCertificatesError.operationFailed(
                operation: "read the file", path: url.path, reason: "\(error)")
        }
    }

    /// Creates `directory` (and parents) with mode 0700 if it does not exist.
    static func createDirectory(_ directory: URL) throws {
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DevCertificatesError.operationFailed(
                operation: "create the certificate directory", path: directory.path, reason: "\(error)")
        }
    }

    /// Tightens a key file to 0600 if it is more permissive.
    static func restrictPermissions(_ url: URL) throws {
        var info = stat()
        guard stat(url.path, &info) == 0 else { throw posixError("inspect the key file", url.path) }
        if info.st_mode & 0o077 != 0, chmod(url.path, 0o600) != 0 {
            throw posixError("restrict the key file's permissions to 0600", url.path)
        }
    }

    /// Writes `contents` to a new temporary file (created with `mode`, regardless of
    /// the umask) next to `url`, flushes it to disk and renames it over `url`.
    static func writeAtomically(_ contents: String, to url: URL, mode: mode_t) throws {
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw posixError("create a temporary file", temporary.path) }
        var renamed = false
        defer { if !renamed { unlink(temporary.path) } }
        do {
            defer { close(fd) }
            guard fchmod(fd, mode) == 0 else { throw posixError("set permissions", temporary.path) }
            let bytes = Array(contents.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw posixError("write", temporary.path)
                }
                offset += written
            }
            guard fsync(fd) == 0 else { throw posixError("flush", temporary.path) }
        }
        guard rename(temporary.path, url.path) == 0 else { throw posixError("rename into place", url.path) }
        renamed = true
        // Make the rename itself durable; failure here does not lose data already written.
        let directoryFD = open(url.deletingLastPathComponent().path, O_RDONLY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }

    /// Runs `body` holding an exclusive `flock` on `lockURL` (created 0600 if needed),
    /// waiting at most `timeout` seconds for another holder.
    static func withLock<T>(at lockURL: URL, timeout: TimeInterval, _ body: () throws -> T) throws -> T {
        let fd = open(lockURL.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw posixError("open the lock file", lockURL.path) }
        defer { close(fd) }  // closing releases the lock
        let deadline = Date() + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else { throw posixError("lock", lockURL.path) }
            guard Date() < deadline else {
                throw DevCertificatesError.lockTimeout(path: lockURL.path, seconds: timeout)
            }
            usleep(20_000)
        }
        return try body()
    }

    static func posixError(_ operation: String, _ path: String) -> DevCertificatesError {
        .operationFailed(operation: operation, path: path, reason: String(cString: strerror(errno)))
    }
}
