import Foundation
import Logging
import Provenance
import Synchronization

/// The relay's signing key and the signatures it made: every artifact's OCI manifest (the
/// one the agent serves, computed from the same description the agent receives) is signed
/// once, in cosign's format, and the signature is reused for every agent and bundle.
public final class RelaySigner: Sendable {
    public let key: SigningKey
    /// Retired keys' public halves (signing.previousPublicKeys, then keys retired by
    /// `relay-server keys rotate`): still listed by `relay-server keys public`.
    public let previousKeys: [TrustedKey]
    private let cache = Mutex<[String: CosignSignature]>([:])

    public init(key: SigningKey, previousKeys: [TrustedKey] = []) {
        self.key = key
        self.previousKeys = previousKeys
    }

    /// Loads `config.signingKeyFile`, creating it when it is the default one and missing.
    public static func load(_ config: ResolvedServerConfig, logger: Logger? = nil) throws -> RelaySigner {
        let key: SigningKey
        if config.signingKeyIsDefault {
            let (loaded, created) = try SigningKey.loadOrCreate(path: config.signingKeyFile)
            if created {
                logger?.notice("created the relay's signing key; give agents its public key (relay-server keys public)",
                               metadata: ["file": "\(config.signingKeyFile)", "key": "\(loaded.publicKey.id)"])
            }
            key = loaded
        } else {
            key = try SigningKey.load(path: config.signingKeyFile)
        }
        // Keys retired by `relay-server keys rotate` stay listed until `keys remove`.
        return RelaySigner(key: key, previousKeys: config.previousSigningKeys + (try SigningKeyRotation.retiredKeys(config)))
    }

    /// Every public key agents should trust: the current one first.
    public var publicKeys: [TrustedKey] { [key.publicKey] + previousKeys.filter { $0 != key.publicKey } }

    /// The signature of `manifest` for `source` (the payload's `docker-reference`), made once.
    public func signature(for manifest: OCIManifest, source: String) -> CosignSignature {
        // Keyed by source too: the payload names the source (two sources of one remote can
        // share a manifest), so one source's signature never serves another's.
        let key = manifest.digest + "\u{0}" + source
        if let cached = cache.withLock({ $0[key] }) { return cached }
        let signature = CosignSignature.sign(manifestDigest: manifest.digest, dockerReference: source, key: self.key)
        cache.withLock { cache in
            if cache.count > 4096 { cache.removeAll() }  // a bound; re-signing is cheap
            cache[key] = signature
        }
        return signature
    }

    /// The manifest the agent will serve for `artifact` as DesiredState describes it (its
    /// packaging time in whole milliseconds, as the wire carries it).
    public static func manifest(for artifact: PackagedArtifact) -> OCIManifest {
        if let oci = artifact.oci { return OCIManifest(bytes: oci.manifest, mediaType: oci.mediaType) }
        return OCIManifest(revision: artifact.revision, origin: artifact.origin.isEmpty ? artifact.source : artifact.origin,
                    digest: artifact.digest, size: artifact.size, createdUnixMs: wireMilliseconds(artifact.createdAt),
                    fallback: artifact.createdAt)
    }

    /// The packaging time as DesiredState carries it.
    public static func wireMilliseconds(_ date: Date) -> Int64 { Registry.milliseconds(date) }
}
