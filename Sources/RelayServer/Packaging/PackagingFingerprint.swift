import ArtifactMirror
import Crypto
import Foundation

/// What shapes a source's artifact besides its commit: the packer's format and the source's
/// `ignore` patterns. Recorded with each revision. Replicas packaging one commit with the
/// same fingerprint must get the same digest (packaging is reproducible), and a replica that
/// does not refuses its bytes; a different fingerprint (relay.yaml changed, a new format) is
/// a new artifact, not a fault.
enum PackagingFingerprint {
    /// Bump when ArtifactMirror's output for the same tree changes.
    static let format = "relay-artifact-1"

    static func of(_ source: ResolvedServerConfig.Source) -> String {
        let digest = SHA256.hash(data: Data("\(format)\n\(source.ignore ?? "")".utf8))
        return digest.prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// TEST HOOK: `RELAY_TEST_EXTRA_IGNORE=<pattern>` adds an ignore pattern to what this
    /// process packages without changing its fingerprint: a replica whose packaging is not
    /// reproducible, for the test that it refuses what it cannot reproduce.
    static let extraIgnore = ProcessInfo.processInfo.environment["RELAY_TEST_EXTRA_IGNORE"]

    /// The pack request for `source` at `reference`.
    static func request(_ source: ResolvedServerConfig.Source, remote: RemoteLocation, reference: GitReference?) -> PackRequest {
        let ignore = [source.ignore, extraIgnore].compactMap { $0 }.joined(separator: "\n")
        return PackRequest(remote: remote, reference: reference, credentials: source.credentials,
                           ignore: ignore.isEmpty ? nil : ignore)
    }
}
