import ArtifactMirror
import Foundation
import Provenance

/// Rotation of the relay's default signing key (`<dataDir>/signing/relay.key`): the current
/// key moves to `<dataDir>/signing/retired/<keyid>.key` (its public half beside it as
/// `<keyid>.pub`) and a new key is created. Retired public keys stay listed by
/// `relay-server keys public` (agents keep accepting what the old key signed) until
/// `relay-server keys remove <keyid>` deletes them.
public enum SigningKeyRotation {
    public enum Failure: Error, CustomStringConvertible {
        case customKeyFile(String)
        case unknownKey(id: String, retired: [String])
        case currentKey(String)
        case configuredKey(String)
        case io(String)

        public var description: String {
            switch self {
            case .customKeyFile(let path):
                "signing.keyFile is set (\(path)): rotate by putting a new key in that file and listing the old public key in signing.previousPublicKeys; "
                    + "`keys rotate` manages only the default key under dataDir"
            case .unknownKey(let id, let retired):
                "no retired key '\(id)'" + (retired.isEmpty ? "; there are none (relay-server keys public lists every key)"
                    : "; retired keys: \(retired.joined(separator: ", "))")
            case .currentKey(let id): "'\(id)' is the current signing key: rotate first (relay-server keys rotate), then remove it"
            case .configuredKey(let id):
                "'\(id)' comes from signing.previousPublicKeys in relay.yaml: remove it there"
            case .io(let detail): detail
            }
        }
    }

    public static func signingDirectory(_ config: ResolvedServerConfig) -> URL {
        URL(fileURLWithPath: config.signingKeyFile).deletingLastPathComponent()
    }

    public static func retiredDirectory(_ config: ResolvedServerConfig) -> URL {
        signingDirectory(config).appendingPathComponent("retired")
    }

    /// Public keys of retired default keys, most recently retired first (none with signing.keyFile).
    public static func retiredKeys(_ config: ResolvedServerConfig) throws(KeyError) -> [TrustedKey] {
        guard config.signingKeyIsDefault else { return [] }
        let directory = retiredDirectory(config)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".pub") }
        let dated = names.map { name -> (String, Date) in
            let path = directory.appendingPathComponent(name).path
            let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? .distantPast
            return (path, modified)
        }
        var keys: [TrustedKey] = []
        for (path, _) in dated.sorted(by: { $0.1 == $1.1 ? $0.0 < $1.0 : $0.1 > $1.1 }) {
            keys += try TrustedKey.load(path: path)
        }
        return keys
    }

    /// Retires the current default key and creates a new one; returns both public keys.
    public static func rotate(_ config: ResolvedServerConfig) throws -> (retired: TrustedKey, current: TrustedKey) {
        guard config.signingKeyIsDefault else { throw Failure.customKeyFile(config.signingKeyFile) }
        let (old, _) = try SigningKey.loadOrCreate(path: config.signingKeyFile)
        let retired = retiredDirectory(config)
        let id = old.publicKey.id
        do {
            try FileManager.default.createDirectory(at: retired, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try FileSystem.writeAtomically(Data((old.publicKey.pem + "\n").utf8), to: retired.appendingPathComponent("\(id).pub").path)
        } catch {
            throw Failure.io("cannot write \(retired.path)/\(id).pub: \(error)")
        }
        // A rename keeps the private key's bytes and mode; the next loadOrCreate makes the new one.
        guard rename(config.signingKeyFile, retired.appendingPathComponent("\(id).key").path) == 0 else {
            throw Failure.io("cannot move \(config.signingKeyFile) to \(retired.path): \(String(cString: strerror(errno)))")
        }
        let (new, _) = try SigningKey.loadOrCreate(path: config.signingKeyFile)
        return (old.publicKey, new.publicKey)
    }

    /// Deletes a retired key (both halves).
    public static func remove(id: String, config: ResolvedServerConfig) throws {
        if config.previousSigningKeys.contains(where: { $0.id == id }) { throw Failure.configuredKey(id) }
        if FileManager.default.fileExists(atPath: config.signingKeyFile),
           (try? SigningKey.load(path: config.signingKeyFile))?.publicKey.id == id {
            throw Failure.currentKey(id)
        }
        let retired = (try? retiredKeys(config)) ?? []
        guard id.count == 16, id.allSatisfy(\.isHexDigit), retired.contains(where: { $0.id == id }) else {
            throw Failure.unknownKey(id: String(id.prefix(80)), retired: retired.map(\.id))
        }
        let directory = retiredDirectory(config)
        for suffix in [".key", ".pub"] {
            let path = directory.appendingPathComponent(id + suffix).path
            if unlink(path) != 0, errno != ENOENT {
                throw Failure.io("cannot delete \(path): \(String(cString: strerror(errno)))")
            }
        }
    }
}
