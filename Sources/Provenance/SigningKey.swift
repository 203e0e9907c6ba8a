import Crypto
import Foundation

/// Why a key could not be used: each case names the file and what to do.
public enum KeyError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, detail: String)
    case notAKey(path: String, detail: String)
    case cannotWrite(path: String, detail: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let detail): "cannot read the key \(path): \(detail)"
        case .notAKey(let path, let detail):
            "\(path) is not an ECDSA P-256 key in PEM (\(detail)); create one with `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`, or let the process create it"
        case .cannotWrite(let path, let detail): "cannot write the key \(path): \(detail)"
        }
    }

    /// Stable, for logs and metrics.
    public var code: String {
        switch self {
        case .unreadable: "key_unreadable"
        case .notAKey: "not_a_key"
        case .cannotWrite: "key_unwritable"
        }
    }
}

/// An ECDSA P-256 signing key (cosign's default algorithm), kept as a PEM file. Signatures
/// are ASN.1 DER over the SHA-256 of the message, as cosign and Go's `ecdsa.SignASN1` make them.
public struct SigningKey: Sendable {
    /// The key's raw scalar (swift-crypto's key types are not `Sendable`).
    private let raw: Data

    public init(_ privateKey: P256.Signing.PrivateKey) { raw = privateKey.rawRepresentation }

    public var privateKey: P256.Signing.PrivateKey { try! P256.Signing.PrivateKey(rawRepresentation: raw) }

    /// Reads a PEM private key (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    public static func load(path: String) throws(KeyError) -> SigningKey {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .unreadable(path: path, detail: "\(error.localizedDescription)")
        }
        do { return SigningKey(try P256.Signing.PrivateKey(pemRepresentation: text)) } catch {
            throw .notAKey(path: path, detail: "\(error)")
        }
    }

    /// Reads the key at `path`, or creates it there (mode 0600, written atomically) when
    /// there is no file. Returns the key and whether it was created.
    public static func loadOrCreate(path: String) throws(KeyError) -> (key: SigningKey, created: Bool) {
        if FileManager.default.fileExists(atPath: path) { return (try load(path: path), false) }
        let key = SigningKey(P256.Signing.PrivateKey())
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let temporary = path + ".tmp-\(getpid())"
            guard FileManager.default.createFile(atPath: temporary, contents: Data(key.privateKey.pemRepresentation.utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw KeyError.cannotWrite(path: path, detail: "cannot create \(temporary)")
            }
            // Never replace a key another process created meanwhile: link fails if it exists.
            if link(temporary, path) != 0 {
                let failure = errno
                unlink(temporary)
                if failure == EEXIST { return (try load(path: path), false) }
                throw KeyError.cannotWrite(path: path, detail: String(cString: strerror(failure)))
            }
            unlink(temporary)
        } catch let error as KeyError {
            throw error
        } catch {
            throw .cannotWrite(path: path, detail: "\(error.localizedDescription)")
        }
        return (key, true)
    }

    public var publicKey: TrustedKey { TrustedKey(privateKey.publicKey) }

    /// DER ECDSA signature over SHA-256(message).
    public func sign(_ message: Data) -> Data {
        // The only failure swift-crypto reports here is a broken random source: nothing to recover.
        (try! privateKey.signature(for: message)).derRepresentation
    }
}

/// A public key that signatures are checked against, with a short id for messages.
public struct TrustedKey: Sendable, Hashable {
    /// SubjectPublicKeyInfo DER (swift-crypto's key types are not `Sendable`).
    public let der: Data
    /// First 16 hex characters of the SHA-256 of the key's DER (SubjectPublicKeyInfo).
    public let id: String

    public init(_ key: P256.Signing.PublicKey) {
        der = key.derRepresentation
        id = String(SHA256Digest(of: der).hex.prefix(16))
    }

    public var key: P256.Signing.PublicKey { try! P256.Signing.PublicKey(derRepresentation: der) }

    public static func == (lhs: TrustedKey, rhs: TrustedKey) -> Bool { lhs.id == rhs.id }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// `-----BEGIN PUBLIC KEY-----` (PKIX), what cosign and Flux's `verify.secretRef` read.
    public var pem: String { key.pemRepresentation }

    public func verifies(_ signature: Data, of message: Data) -> Bool {
        guard let parsed = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
        return key.isValidSignature(parsed, for: message)
    }

    /// Every `PUBLIC KEY` block in a PEM file (one file may list several: rotation).
    public static func load(path: String) throws(KeyError) -> [TrustedKey] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .unreadable(path: path, detail: "\(error.localizedDescription)")
        }
        return try parse(pem: text, path: path)
    }

    public static func parse(pem text: String, path: String) throws(KeyError) -> [TrustedKey] {
        var keys: [TrustedKey] = []
        var block: [Substring] = []
        var inside = false
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("-----BEGIN ") {
                inside = true
                block = [Substring(trimmed)]
            } else if trimmed.hasPrefix("-----END "), inside {
                block.append(Substring(trimmed))
                inside = false
                let pem = block.joined(separator: "\n")
                guard pem.contains("PUBLIC KEY") else {
                    throw .notAKey(path: path, detail: "it holds a \(block[0].dropFirst(11).dropLast(5)) block; give the PUBLIC KEY (e.g. relay-server keys public)")
                }
                do { keys.append(TrustedKey(try P256.Signing.PublicKey(pemRepresentation: pem))) } catch {
                    throw .notAKey(path: path, detail: "\(error)")
                }
            } else if inside {
                block.append(Substring(trimmed))
            }
        }
        guard !keys.isEmpty else { throw .notAKey(path: path, detail: "no PEM PUBLIC KEY block") }
        return keys
    }
}

/// The keys a verifier accepts (any of them: rotation keeps old ones listed until removed).
public struct TrustedKeys: Sendable {
    public let keys: [TrustedKey]

    public init(_ keys: [TrustedKey]) { self.keys = keys }

    /// The key that made `signature` over `message`, if any of these did.
    public func signer(of message: Data, signature: Data) -> TrustedKey? {
        keys.first { $0.verifies(signature, of: message) }
    }

    public var ids: String { keys.map(\.id).joined(separator: ", ") }
}
