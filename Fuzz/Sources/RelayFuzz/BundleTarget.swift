@testable import RelayAgent
import Foundation
import Provenance

/// What an offline agent and the relay read from bundles carried by hand, before any signature
/// is checked: the bundle tar (`PartedTarReader`, as the importer streams it), the unsigned peek
/// at the number of parts (`BundleImporter.partsNeeded`), status bundle envelopes
/// (`SignedEnvelope` JSON) and cosign simple-signing payloads.
///
/// Input: the bytes of a bundle file (or of an envelope, or a payload: each reader gets them).
///
/// Invariants: the reader never reports more content than the file holds and hands over exactly
/// the size it announced; an envelope never verifies under a key whose private half no one has; a payload
/// the parser accepts names a digest and has cosign's type.
enum BundleTarget {
    /// A public key whose private half was thrown away when it was made: nothing can sign for it.
    static let publicKeyPEM = """
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEa4rj67ztSfoCUlIQcDlxpJY9YqEp
        UD539CqCIaEIsAm6GJYWDUZMDeD01aoR22cgZuFRwgy2mTrUkjWgxGQAxg==
        -----END PUBLIC KEY-----
        """

    static func run(_ input: Data) {
        let path = scratchFile("bundle.tar")
        require(FileManager.default.createFile(atPath: path, contents: input), "cannot write a scratch file")
        let reader = PartedTarReader(paths: [path])
        var consumed: UInt64 = 0
        for _ in 0..<256 {
            guard let entry = try? reader.nextEntry() else { break }
            require(entry.size <= UInt64(input.count), "entry \(entry.name.debugDescription) of \(entry.size) bytes in \(input.count)")
            var delivered: UInt64 = 0
            do { try reader.readContent(size: entry.size) { delivered += UInt64($0.count) } } catch { break }
            require(delivered == entry.size, "delivered \(delivered) of \(entry.size)")
            consumed += delivered
        }
        require(consumed <= UInt64(input.count) && reader.position <= UInt64(input.count), "read past the end of the file")
        _ = BundleImporter.partsNeeded(firstPart: path)

        if let envelope = try? JSONDecoder().decode(SignedEnvelope.self, from: input) {
            let keys = TrustedKeys((try? TrustedKey.parse(pem: publicKeyPEM, path: "fuzz.pub")) ?? [])
            require(!keys.keys.isEmpty, "the fixed public key does not parse")
            require(envelope.signer(in: keys) == nil, "an envelope verified under a key nobody holds")
            _ = try? JSONDecoder().decode(StatusStatement.self, from: envelope.statement)
        }
        if let claims = try? CosignSignature.signedClaims(in: input) {
            require(input.count <= 64 << 10, "an oversized payload was parsed")
            _ = claims
        }
    }
}
