import Foundation
import Testing

/// The relay's rules for a session, probed with the Python relay.v1 client and real agents:
/// Fetch slots always come back, one session per agent (the newest wins), and an Ack counts
/// only after Hello and only for what the relay offered.
@Suite struct TunnelSessionRulesTests {
    @Test func cancelledFetchesGiveTheirSlotsBack() throws {
        let (dir, repo, harness) = try RelayHarness.single("fetch-slots")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let client = try InteropClient(harness: harness)

        // Twice the per-agent limit (4) cancelled right after sending, then a whole Fetch.
        let probe = try client.run(token: "t-edge", ["--cancel-fetches", "8", "--fetch", "podinfo"])
        #expect(probe.status == 0, "\(probe.json) \(probe.stderr)")
        #expect(probe.json["cancelled_fetches"] as? Int == 8)
        #expect((probe.json["fetched"] as? [String: Any])?["verified"] as? Bool == true, "\(probe.json)")

        // A real agent on the same token still gets the first revision and a new one.
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact at the agent") { try !harness.published("edge").isEmpty }
        try repo.write("app.yaml", "a: 2\n")
        let commit = try repo.commit("second")
        try harness.pushWebhook(source: harness.sources[0])
        try harness.waitUntil("new revision at the agent") {
            try harness.published("edge").contains { $0.revision == "main@sha1:\(commit)" }
        }
    }

    @Test func theNewestSessionOfAnAgentWinsAndTheOlderLeavingKeepsItConnected() throws {
        let (dir, _, harness) = try RelayHarness.single("sessions")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let client = try InteropClient(harness: harness)

        let older = try client.start(token: "t-edge", ["--hold", "8"])
        defer { older.stop() }
        try harness.waitUntil("the first session connected") { try harness.apiSaysConnected("edge") == true }
        let newer = try client.start(token: "t-edge", ["--hold", "4"])
        defer { newer.stop() }

        // The older session is drained, with a reason that says why.
        try harness.waitUntil("the older session drained", timeout: 6) { !older.isRunning }
        let drained = InteropClient.outcome(of: older)
        #expect(drained.connectEnd == "DRAINED", "\(drained.json)")
        #expect(drained.connectEndDetails.contains("another session for agent edge"), "\(drained.json)")
        // It has left; the newer one holds the agent connected, counted once.
        #expect(newer.isRunning)
        #expect(try harness.apiSaysConnected("edge") == true)
        #expect(try harness.relayMetrics()["relay_agents_connected"] == 1)
        #expect(try harness.relayMetrics()["relay_sessions_superseded_total"] == 1)

        // When the newer one leaves too, the agent is disconnected.
        try harness.waitUntil("the newer session ended", timeout: 10) { !newer.isRunning }
        #expect(InteropClient.outcome(of: newer).connectEnd == "OK", "\(InteropClient.outcome(of: newer).json)")
        try harness.waitUntil("agent shown disconnected") {
            try harness.apiSaysConnected("edge") == false && harness.relayMetrics()["relay_agents_connected"] == 0
        }
    }

    @Test func twoAgentsSharingATokenDoNotFlapForever() throws {
        let (dir, _, harness) = try RelayHarness.single("twins")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("first agent synced") { try !harness.published("edge").isEmpty }
        try harness.startAgent("edge-twin", token: "t-edge")  // a copy of the agent, same token
        try harness.waitUntil("second agent synced") { try !harness.published("edge-twin").isEmpty }

        // Each takes the agent's place from the other in turn, but the relay makes the one it
        // drains wait longer every time: the take-overs thin out instead of going on forever.
        let start = Date()
        var maxConnected = 0.0
        while Date().timeIntervalSince(start) < 6 {
            maxConnected = max(maxConnected, try harness.relayMetrics()["relay_agents_connected"] ?? 0)
            Thread.sleep(forTimeInterval: 0.2)
        }
        let early = try harness.relayMetrics()["relay_sessions_superseded_total"] ?? 0
        Thread.sleep(forTimeInterval: 3)
        let later = try harness.relayMetrics()["relay_sessions_superseded_total"] ?? 0
        #expect(maxConnected == 1, "one agent, however many sessions")
        #expect(early >= 1 && early <= 7, "take-overs in the first 6 s: \(early)")
        #expect(later - early <= 2, "take-overs in the next 3 s: \(later - early)")
        #expect(try harness.apiSaysConnected("edge") == true || later > early)
    }

    @Test func acksCountOnlyAfterHelloAndOnlyForWhatWasOffered() throws {
        let (dir, _, harness) = try RelayHarness.single("acks")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let client = try InteropClient(harness: harness)
        let offered = try #require(try client.run(token: "t-edge").artifacts.first, "a desired state")
        let revision = try #require(offered["revision"] as? String)
        let digest = try #require(offered["digest"] as? String)
        let forgedDigest = "sha256:" + String(repeating: "ab", count: 32)

        // Before Hello: refused, nothing stored.
        let early = try client.run(token: "t-edge", ["--ack-before-hello", "--forge-ack", "podinfo", revision, forgedDigest])
        #expect(early.errorCode == "FAILED_PRECONDITION", "\(early.json)")
        // After Hello, a digest or a revision that was never offered: refused.
        for (forgedRevision, ackedDigest) in [(revision, forgedDigest), ("main@sha1:" + String(repeating: "0", count: 40), digest)] {
            let forged = try client.run(token: "t-edge", ["--forge-ack", "podinfo", forgedRevision, ackedDigest, "--hold", "5"])
            #expect(forged.connectEnd == "INVALID_ARGUMENT", "\(forged.json)")
        }
        #expect(try harness.relayMetrics()["relay_deliveries_total"] ?? 0 == 0, "nothing recorded")
        #expect(try Self.delivered(harness, digest: digest) == false)

        // What was offered, fetched and acknowledged counts.
        let real = try client.run(token: "t-edge", ["--fetch", "podinfo"])
        #expect(real.status == 0, "\(real.json)")
        try harness.waitUntil("the real delivery recorded") { try Self.delivered(harness, digest: digest) == true }
    }

    /// Whether the revisions API shows `digest` delivered to agent edge.
    static func delivered(_ harness: RelayHarness, digest: String) throws -> Bool? {
        let revisions = try harness.api("sources/podinfo/revisions") as? [[String: Any]] ?? []
        let agents = revisions.first { $0["digest"] as? String == digest }?["agents"] as? [[String: Any]]
        return agents?.first { $0["agent"] as? String == "edge" }?["delivered"] as? Bool
    }
}
