import Foundation
import Testing

/// The agent's store under damage: a stored artifact changed at rest, and a disk too small
/// for the next revision (real relay-server and relay-agent processes, curl as the client).
@Suite struct ArtifactIntegrityTests {
    static func randomData(_ count: Int) throws -> Data {
        let handle = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        defer { try? handle.close() }
        return try #require(try handle.read(upToCount: count))
    }

    /// Flips one bit of one byte in place: same size, same name, wrong bytes.
    static func flipByte(_ file: URL, at offset: UInt64) throws {
        let handle = try FileHandle(forUpdating: file)
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data([byte ^ 0x01]))
    }

    /// The relay's status timeline for agent `edge` (reader token), oldest first.
    static func timeline(_ harness: RelayHarness) throws -> [[String: Any]] {
        let answer = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/timeline?agent=edge&limit=1000",
                                           headers: ["Authorization: Bearer \(harness.readerToken)"])
        return (answer.json?["entries"] as? [[String: Any]]) ?? []
    }

    static func events(_ harness: RelayHarness, reason: String) throws -> [[String: Any]] {
        try timeline(harness).compactMap { $0["event"] as? [String: Any] }.filter { $0["reason"] as? String == reason }
    }

    @Test func aStoredArtifactChangedAtRestIsNeverServedWholeAndIsFetchedAgain() throws {
        let (dir, repo, harness) = try RelayHarness.single("integrity")
        defer { harness.shutdown(); dir.remove() }
        try repo.write("blob.dat", try Self.randomData(1 << 20))  // several 256 KiB serving chunks
        _ = try repo.commit("big")
        let port = try harness.serveFlux("edge")
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("the artifact at the agent") { try (harness.published("edge").first?.size ?? 0) > 1 << 20 }
        let artifact = try #require(try harness.published("edge").first)
        let hex = String(artifact.digest.dropFirst(7))
        let base = "http://127.0.0.1:\(port)"
        try harness.waitUntil("flux endpoint ready") { try HTTPProbe.request("\(base)/readyz").status == 200 }
        let file = dir.appending("agent-edge/store/artifacts/sha256/\(hex).tar.gz")

        // Once through the plain artifact URL with a byte in the middle flipped, once through
        // the OCI blob with the very last byte flipped (the chunk a client would complete on).
        let rounds = [("\(base)/artifacts/sha256/\(hex).tar.gz", artifact.size / 2),
                      ("\(base)/v2/podinfo/blobs/\(artifact.digest)", artifact.size - 1)]
        for (round, (url, offset)) in rounds.enumerated() {
            try Self.flipByte(file, at: offset)
            #expect(try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber == NSNumber(value: artifact.size))
            let damaged = try HTTPProbe.request(url)
            #expect(damaged.body.count < Int(artifact.size), "round \(round): the client got every byte of a corrupt artifact")
            #expect(damaged.sha256 != artifact.digest)
            try harness.waitUntil("corruption \(round + 1) counted") {
                try MetricsAndLogsTests.scrape("\(base)/metrics")["relay_agent_corrupt_artifacts_total"] == Double(round + 1)
            }
            // Quarantined, fetched again from the relay, served whole and right.
            try harness.waitUntil("the artifact fetched again (round \(round))") {
                let good = try HTTPProbe.request(url)
                return good.status == 200 && good.sha256 == artifact.digest
            }
        }
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: dir.appending("agent-edge/quarantine").path)
        #expect(quarantined.count == 2 && quarantined.allSatisfy { $0.hasPrefix(hex) })
        // Still served under its tags, and reported at the relay.
        #expect(try HTTPProbe.request("\(base)/v2/podinfo/manifests/main", method: "HEAD").status == 200)
        // Ranges are not served: a Range request gets the whole (hashed) file.
        let ranged = try HTTPProbe.request(rounds[1].0, headers: ["Range: bytes=0-99"])
        #expect(ranged.status == 200 && ranged.sha256 == artifact.digest)
        try harness.waitUntil("the corruption reported at the relay") { try Self.events(harness, reason: "ArtifactCorrupt").count == 2 }
    }

    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aFullDiskFailsOnlyThatFetchWhileTheSessionAndStatusCarryOn() throws {
        let (dir, repo, harness) = try RelayHarness.single("diskfull")
        defer { dir.remove() }
        // The agent's whole dataDir on a 512 KiB tmpfs: room for the first revision and the
        // status journal, not for the 2 MiB one pushed below.
        let dataDir = dir.appending("agent-edge")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        _ = try runProcess("/usr/bin/env", ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", dataDir.path])
        defer {
            if (try? runProcess("/usr/bin/env", ["umount", dataDir.path], allowFailure: true))?.status != 0 {
                _ = try? runProcess("/usr/bin/env", ["umount", "-l", dataDir.path], allowFailure: true)
            }
        }
        defer { harness.shutdown() }
        try Data("event-key\n".utf8).write(to: dir.appending("events.key"))
        let port = try harness.serveFlux("edge", yaml: "flux: {events: {hmacTokenFile: \(dir.appending("events.key").path)}}\n")
        let metrics = "http://127.0.0.1:\(port)/metrics"
        try harness.startRelay()
        let agent = try harness.startAgent("edge")
        try harness.waitUntil("first artifact") { try !harness.published("edge").isEmpty }
        try harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }

        try repo.write("blob.dat", try Self.randomData(2 << 20))
        let big = try repo.commit("too big for the agent's disk")
        try harness.pushWebhook(source: harness.sources[0])
        try harness.waitUntil("the big revision packaged") {
            try MetricsAndLogsTests.scrape("http://127.0.0.1:\(harness.httpPort)/metrics")["relay_artifacts_packaged_total{source=\"podinfo\"}"] == 2
        }

        // The session carries on: connected throughout, status events reach the relay.
        var posted = 0
        for sample in 0..<40 {
            let samples = try MetricsAndLogsTests.scrape(metrics)
            #expect(samples["relay_agent_connected"] == 1, "sample \(sample): the session ended")
            if sample % 8 == 0 {
                #expect(try StatusUplinkTests.postEvent(port: port, key: "event-key", message: "event \(posted)") == 202)
                posted += 1
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        try harness.waitUntil("status events at the relay") {
            try Self.events(harness, reason: "ReconciliationSucceeded").count == posted
        }
        let agents = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/agents",
                                           headers: ["Authorization: Bearer \(harness.readerToken)"])
        #expect((try JSONSerialization.jsonObject(with: agents.body) as? [[String: Any]])?.first?["connected"] as? Bool == true)
        #expect(try !harness.published("edge").contains { $0.revision == "main@sha1:\(big)" })
        #expect(try (MetricsAndLogsTests.scrape(metrics)["relay_agent_fetch_failures_total"] ?? 0) >= 1)
        #expect(try Self.events(harness, reason: "FetchFailed").count >= 1)

        // Room again: the retry brings the revision in, with no restart.
        _ = try runProcess("/usr/bin/env", ["mount", "-o", "remount,size=16m", dataDir.path])
        try harness.waitUntil("the big revision at the agent", timeout: 30) {
            try harness.published("edge").first?.revision == "main@sha1:\(big)"
        }
        #expect(agent.isRunning)
        let published = try #require(try harness.published("edge").first)
        let served = try HTTPProbe.request("http://127.0.0.1:\(port)/artifacts/sha256/\(published.digest.dropFirst(7)).tar.gz")
        #expect(served.status == 200 && served.sha256 == published.digest)
    }
}
