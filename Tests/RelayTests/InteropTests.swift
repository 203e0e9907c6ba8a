import Foundation
import Testing

/// The protocol is language-neutral: a Python client (grpcio, stubs generated from the same
/// relay.proto at run time) authenticates, receives the desired state and fetches an
/// artifact from a real relay-server.
@Suite struct InteropTests {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The virtualenv's python, installed by scripts/setup-python.sh (idempotent).
    static func python() throws -> String {
        let output = try runProcess("/bin/bash", [repoRoot.appendingPathComponent("scripts/setup-python.sh").path],
                                    in: repoRoot, timeout: 300)
        return output.stdout.split(separator: "\n").last.map(String.init) ?? "python3"
    }

    @Test func pythonClientAuthenticatesAndFetches() throws {
        let python = try Self.python()
        let dir = try TemporaryDirectory(prefix: "interop")
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        try repo.write("apps/app.yaml", "kind: ConfigMap\n")
        try repo.write("blob.bin", Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }))
        _ = try repo.commit("init")
        let harness = try RelayHarness(sources: [.init(name: "demo", repo: repo, branch: "main")],
                                       agents: [.init(name: "py", token: "python-token", sources: ["demo"])], dir: dir,
                                       chunkBytes: 1 << 20)
        defer { harness.shutdown() }
        try harness.startRelay()
        try harness.waitUntil("source packaged") { harness.relayLog.contains("packaged") }

        let client = Self.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/interop/relay_client.py").path
        let out = dir.appending("fetched.tar.gz")
        let run = try runProcess(python, [client, "--target", "localhost:\(harness.tunnelPort)",
                                          "--ca", harness.certificates.caCertificate.path,
                                          "--token-file", dir.appending("py.token").path,
                                          "--fetch", "demo", "--out", out.path, "--timeout", "30"],
                                 timeout: 60, allowFailure: true)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as! [String: Any]
        let welcome = result["welcome"] as? [String: Any] ?? [:]
        #expect(welcome["agent_name"] as? String == "py")
        let fetched = try #require(result["fetched"] as? [String: Any])
        #expect(fetched["verified"] as? Bool == true)
        let expected = try runProcess(Binaries.artifactMirror, ["pack", repo.url.path, "--branch", "main",
                                                                "--cache", dir.appending("c").path, "--output",
                                                                dir.appending("s").path, "--json"])
        let digest = (try JSONSerialization.jsonObject(with: Data(expected.stdout.utf8)) as! [String: Any])["digest"] as? String
        #expect(fetched["digest"] as? String == digest)
        #expect("sha256:" + sha256Hex(try Data(contentsOf: out)) == digest)
        try harness.waitUntil("the Python client's ack recorded") { harness.relayLog.contains("agent=py") && harness.relayLog.contains("delivered") }

        try Data("wrong".utf8).write(to: dir.appending("wrong.token"))
        let refused = try runProcess(python, [client, "--target", "localhost:\(harness.tunnelPort)",
                                              "--ca", harness.certificates.caCertificate.path,
                                              "--token-file", dir.appending("wrong.token").path, "--timeout", "20"],
                                     timeout: 60, allowFailure: true)
        #expect(refused.status == 3)
        #expect(refused.stdout.contains("UNAUTHENTICATED"), "\(refused.stdout)")
    }
}

func sha256Hex(_ data: Data) -> String {
    var hasher = CryptoHasher()
    hasher.update(data)
    return hasher.hex
}
