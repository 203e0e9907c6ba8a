import Foundation
import Testing

/// What the agent serves verifies as a cosign signature without any of Relay's code: skopeo
/// fetches the manifest and its `sha256-<hex>.sig` signature from the agent, and Python's
/// `cryptography` checks the payload and the ECDSA signature with the PEM key printed by
/// `relay-server keys public` (Fixtures/cosign/verify_signature.py).
@Suite struct CosignInteropTests {
    static func verify(_ python: String, _ setup: SignatureTrustTests.Setup, tag: String, keyFile: URL) throws -> [String: Any] {
        let work = setup.dir.appending("verify-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let run = try runProcess(python, [FluxOCITests.fixture("cosign/verify_signature.py"), "127.0.0.1:\(setup.port)", "podinfo", tag,
                                          keyFile.path, work.path], timeout: 120)
        return try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)\n\(run.stderr)")
    }

    @Test func skopeoAndPythonCryptographyVerifyTheServedSignatureWithTheRelaysPublicKey() throws {
        _ = try #require(findExecutable("skopeo"), "skopeo is installed by scripts/setup.sh")
        let python = try InteropTests.python()
        let setup = try SignatureTrustTests.start("cosign-interop")
        defer { setup.stop() }
        try setup.harness.waitUntil("artifact published") { try !setup.harness.published("edge").isEmpty }
        let commit = try setup.repo.head()

        // trusted-relay.pub is exactly `relay-server keys public`.
        for tag in ["main", "latest", String(commit.prefix(7))] {
            let report = try Self.verify(python, setup, tag: tag, keyFile: setup.trustFile)
            #expect(report["ok"] as? Bool == true, "\(tag): \(report)")
            #expect(report["keyIndex"] as? Int == 0)
        }
        let served = try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/main")
        let report = try Self.verify(python, setup, tag: "main", keyFile: setup.trustFile)
        #expect(report["manifestDigest"] as? String == served.sha256)

        // The check is real: another key does not verify the same signature.
        let other = setup.dir.appending("other.pub")
        try Data(SignatureTrustTests.otherKeyPEM().utf8).write(to: other)
        let refused = try Self.verify(python, setup, tag: "main", keyFile: other)
        #expect(refused["ok"] as? Bool == false)
        #expect((refused["errors"] as? [String])?.count == 1)
    }
}
