import Foundation
import Testing

/// The tunnel under faults: cut and stalled connections (a TCP proxy between agent and
/// relay), a damaged chunk, and the agent killed mid-fetch. Every case must end with the
/// verified artifact published, and never with a partial one.
@Suite struct TunnelFaultTests {
    /// A repository whose artifact is ~6 MB (incompressible content), so fetches take many chunks.
    static func bigRepo(_ dir: TemporaryDirectory) throws -> TestRepo {
        let repo = try TestRepo.create(at: dir.appending("big"))
        var state: UInt64 = 0x1234_5678
        var bytes = [UInt8](repeating: 0, count: 6 << 20)
        for i in stride(from: 0, to: bytes.count, by: 8) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            withUnsafeBytes(of: state) { raw in for j in 0..<8 where i + j < bytes.count { bytes[i + j] = raw[j] } }
        }
        try repo.write("blobs/data.bin", Data(bytes))
        try repo.write("apps/app.yaml", "kind: ConfigMap\n")
        _ = try repo.commit("big")
        return repo
    }

    /// The digest artifact-mirror computes for the same commit.
    static func expectedDigest(_ repo: TestRepo, _ dir: TemporaryDirectory) throws -> String {
        let output = try runProcess(Binaries.artifactMirror, ["pack", repo.url.path, "--branch", "main", "--cache",
                                                              dir.appending("am-cache").path, "--output",
                                                              dir.appending("am-store").path, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as! [String: Any]
        return object["digest"] as! String
    }

    static func harness(_ dir: TemporaryDirectory, repo: TestRepo) throws -> RelayHarness {
        try RelayHarness(sources: [.init(name: "big", repo: repo, branch: "main")],
                         agents: [.init(name: "edge", token: "tok", sources: ["big"])], dir: dir,
                         heartbeat: "500ms", chunkBytes: 256 * 1024)
    }

    /// The big repository, the digest artifact-mirror computes for it, and a relay harness
    /// serving it (not started).
    static func setUp(_ dir: TemporaryDirectory) throws -> (expected: String, harness: RelayHarness) {
        let repo = try bigRepo(dir)
        return (try expectedDigest(repo, dir), try harness(dir, repo: repo))
    }

    /// Offsets (> 0) that the relay served resumed fetches from.
    static func resumedOffsets(_ log: String) -> [UInt64] {
        log.split(separator: "\n").filter { $0.contains("fetch served") }.compactMap { line in
            guard let range = line.range(of: "offset=") else { return nil }
            return UInt64(line[range.upperBound...].prefix { $0.isNumber })
        }.filter { $0 > 0 }
    }

    @Test func cutConnectionResumesFromTheVerifiedOffset() throws {
        let dir = try TemporaryDirectory(prefix: "fault")
        defer { dir.remove() }
        let (expected, harness) = try Self.setUp(dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        let proxy = try FaultProxy(upstreamPort: harness.tunnelPort, fault: .cutAfter(bytes: 2_500_000))
        defer { proxy.stop() }
        try harness.startAgent("edge", relayPort: proxy.port)

        try harness.waitUntil("artifact after the cut", timeout: 30) { try !harness.published("edge").isEmpty }
        #expect(try harness.published("edge").first?.digest == expected)
        #expect(proxy.connectionCount >= 2, "the agent reconnected")
        #expect(harness.agentLog("edge").contains("resuming fetch"))
        let offsets = Self.resumedOffsets(harness.relayLog)
        #expect(!offsets.isEmpty && offsets.allSatisfy { $0 % (256 * 1024) == 0 && $0 <= 2_500_000 },
                "resumed at chunk boundaries before the cut: \(offsets)")
    }

    @Test func stalledConnectionIsDetectedAndTheFetchCompletes() throws {
        let dir = try TemporaryDirectory(prefix: "fault")
        defer { dir.remove() }
        let (expected, harness) = try Self.setUp(dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        let proxy = try FaultProxy(upstreamPort: harness.tunnelPort, fault: .stallAfter(bytes: 2_500_000, seconds: 4))
        defer { proxy.stop() }
        try harness.startAgent("edge", relayPort: proxy.port)

        try harness.waitUntil("dead peer detected", timeout: 15) {
            harness.agentLog("edge").contains("no word from the relay for two heartbeat intervals")
        }
        try harness.waitUntil("artifact after the stall", timeout: 40) { try !harness.published("edge").isEmpty }
        #expect(try harness.published("edge").first?.digest == expected)
    }

    @Test func damagedChunkIsCaughtAndFetchedAgain() throws {
        let dir = try TemporaryDirectory(prefix: "fault")
        defer { dir.remove() }
        let (expected, harness) = try Self.setUp(dir)
        defer { harness.shutdown() }
        try harness.startRelay(environment: ["RELAY_TEST_CORRUPT_CHUNK": "5"])
        try harness.startAgent("edge")

        try harness.waitUntil("artifact despite a damaged chunk", timeout: 30) { try !harness.published("edge").isEmpty }
        #expect(try harness.published("edge").first?.digest == expected)
        #expect(harness.agentLog("edge").contains("damaged chunk discarded"))
        #expect(Self.resumedOffsets(harness.relayLog) == [4 * 256 * 1024], "refetched from the damaged chunk on")
    }

    @Test func killDashNineMidFetchPublishesNothingAndTheNextRunResumes() throws {
        let dir = try TemporaryDirectory(prefix: "fault")
        defer { dir.remove() }
        let (expected, harness) = try Self.setUp(dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        let proxy = try FaultProxy(upstreamPort: harness.tunnelPort, fault: .stallAfter(bytes: 3_000_000, seconds: nil))
        defer { proxy.stop() }
        try harness.startAgent("edge", relayPort: proxy.port)

        let partialDir = dir.appending("agent-edge/partial")
        try harness.waitUntil("a partial download on disk", timeout: 20) {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: partialDir.path)) ?? []
            guard let name = names.first else { return false }
            let size = (try? FileManager.default.attributesOfItem(atPath: partialDir.appendingPathComponent(name).path)[.size] as? Int) ?? 0
            return size > 1_000_000
        }
        harness.killAgent("edge")
        #expect(try harness.published("edge").isEmpty, "nothing partial is published")

        proxy.setFault(.none)
        try harness.startAgent("edge", relayPort: proxy.port)
        try harness.waitUntil("artifact after restart", timeout: 30) { try !harness.published("edge").isEmpty }
        #expect(try harness.published("edge").first?.digest == expected)
        #expect(harness.agentLog("edge").contains("resuming fetch"))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: partialDir.path)) ?? []).isEmpty)
    }
}
