import Foundation
import Synchronization
import Testing
@testable import RelayServer

/// The relay-wide session watchers that replaced a timer, a task and a SQLite query per
/// connection: a silent peer is still closed after two heartbeat intervals, a revoked token
/// still ends its live session at once, and the admission control and group commit behave
/// as their documentation says.
@Suite struct SessionWatchTests {
    @Test func aSilentPeerIsClosedAfterTwoHeartbeatIntervals() throws {
        // The harness's relay beats every 500 ms.
        let (dir, _, harness) = try RelayHarness.single("silent-peer")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let client = try InteropClient(harness: harness)

        let silent = try client.start(token: "t-edge", ["--silent", "--hold", "15"])
        defer { silent.stop() }
        try harness.waitUntil("the silent session connected") { try harness.apiSaysConnected("edge") == true }
        let connected = Date()
        try harness.waitUntil("the relay closed the silent session", timeout: 10) { !silent.isRunning }
        let closedAfter = Date().timeIntervalSince(connected)
        #expect(InteropClient.outcome(of: silent).connectEnd == "DEADLINE_EXCEEDED", "\(InteropClient.outcome(of: silent).json)")
        // Two intervals (1 s) plus the sweep's half interval, and slack for a loaded machine.
        #expect(closedAfter < 3.5, "closed \(closedAfter) s after it was seen connected")
        try harness.waitUntil("shown disconnected") { try harness.apiSaysConnected("edge") == false }

        // A peer that beats stays.
        let beating = try client.run(token: "t-edge", ["--hold", "3"])
        #expect(beating.connectEnd == "OK", "\(beating.json)")
    }

    /// relay-agent offers transport keepalive: its connection is watched by HTTP/2 PINGs, not
    /// Heartbeat messages. A frozen agent (SIGSTOP: its sockets stay open, nothing answers) is
    /// still dropped two intervals after it was last heard of, and a frozen relay is still left
    /// by the agent, which comes back on a new session once the relay runs again.
    @Test func transportKeepaliveDropsAFrozenPeerOnEitherSide() throws {
        let (dir, _, harness) = try RelayHarness.single("keepalive")  // heartbeat 500 ms
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let agent = try harness.startAgent("edge")
        try harness.waitUntil("connected") { try harness.apiSaysConnected("edge") == true }
        func welcomed(_ liveness: String) throws -> Double {
            try harness.relayMetrics()["relay_sessions_welcomed_total{liveness=\"\(liveness)\"}"] ?? 0
        }
        func heartbeats() throws -> Double { try harness.relayMetrics()["relay_heartbeat_messages_total"] ?? 0 }
        #expect(try welcomed("transport") == 1 && welcomed("heartbeat") == 0)
        // Its first connection PINGs at the default 5 s, which is not this relay's interval:
        // on that one it sends Heartbeat messages. The next one PINGs at 500 ms and sends none.
        try harness.waitUntil("Heartbeat messages on the first connection") { try heartbeats() >= 2 }
        harness.stopRelay()
        try harness.startRelay()
        try harness.waitUntil("back") { try welcomed("transport") == 1 && harness.apiSaysConnected("edge") == true }
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try heartbeats() == 0, "three intervals on transport keepalive")

        // The agent freezes: the relay drops it within two intervals (1 s), plus slack.
        // The supervisor shell's child of that name (the shell also runs `sleep`s).
        func server(of process: BackgroundProcess, named name: String) throws -> Int32 {
            let children = try runProcess("/usr/bin/pgrep", ["-x", "-P", "\(process.pid)", name]).stdout
            return try #require(children.split(separator: "\n").compactMap { Int32($0) }.first)
        }
        let agentPID = try server(of: agent, named: "relay-agent")
        kill(agentPID, SIGSTOP)
        let frozen = Date()
        defer { kill(agentPID, SIGCONT) }
        try harness.waitUntil("the frozen agent shown disconnected", timeout: 10) { try harness.apiSaysConnected("edge") == false }
        let droppedAfter = Date().timeIntervalSince(frozen)
        #expect(droppedAfter < 2.5, "dropped \(droppedAfter) s after it froze")
        kill(agentPID, SIGCONT)
        try harness.waitUntil("the agent back") { try welcomed("transport") == 2 && harness.apiSaysConnected("edge") == true }

        // The relay freezes for six intervals: the agent gives its connection up (an unanswered
        // PING) and, once the relay runs again, is welcomed on a new session. An agent that
        // kept the old connection would not be welcomed again.
        let relayPID = try server(of: try #require(harness.relay), named: "relay-server")
        kill(relayPID, SIGSTOP)
        Thread.sleep(forTimeInterval: 3)
        kill(relayPID, SIGCONT)
        try harness.waitUntil("a new session after the relay's freeze", timeout: 10) {
            try welcomed("transport") == 3 && harness.apiSaysConnected("edge") == true
        }
    }

    /// An agent that meets a relay from before transport keepalive (simulated: its Welcome
    /// does not agree and its gRPC server keeps grpc-swift's PING policy, one per 5 minutes)
    /// reconnects once without PINGs and stays: with its PINGs every 5 s that relay would
    /// GOAWAY it ("too_many_pings") about 15 s into every connection.
    @Test func anAgentMeetingARelayWithoutTransportKeepaliveStaysOnHeartbeatMessages() throws {
        let (dir, _, harness) = try RelayHarness.single("legacy-keepalive")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay(environment: ["RELAY_TEST_LEGACY_KEEPALIVE": "1"])
        try harness.waitUntilPackaged("podinfo")
        try harness.startAgent("edge")
        func metric(_ name: String) throws -> Double { try harness.relayMetrics()[name] ?? 0 }
        let sessions = "relay_sessions_welcomed_total{liveness=\"heartbeat\"}"
        try harness.waitUntil("connected without PINGs") { try metric(sessions) == 2 && harness.apiSaysConnected("edge") == true }
        let beats = try metric("relay_heartbeat_messages_total")
        Thread.sleep(forTimeInterval: 18)
        #expect(try metric(sessions) == 2, "no further session: nothing closed the second one")
        #expect(try harness.apiSaysConnected("edge") == true)
        #expect(try metric("relay_heartbeat_messages_total") >= beats + 20, "Heartbeat messages every 500 ms")
        #expect(try metric("relay_sessions_welcomed_total{liveness=\"transport\"}") == 0)
    }

    @Test func aRevokedTokenEndsItsLiveSessionAtOnce() throws {
        let (dir, _, harness) = try RelayHarness.single("revoke-live")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        func agents(_ arguments: [String]) throws -> String {
            try runProcess(Binaries.relayServer, ["agents"] + arguments + ["--config", dir.appending("relay.yaml").path]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let old = try agents(["create", "shop-17", "--sources", "podinfo"])
        _ = try agents(["rotate", "shop-17"])
        let client = try InteropClient(harness: harness)
        let session = try client.start(token: old, ["--hold", "20"])
        defer { session.stop() }
        try harness.waitUntil("the session on the old token connected") { try harness.apiSaysConnected("shop-17") == true }

        // Another process revokes it (the CLI writes the registry file).
        _ = try agents(["revoke", "shop-17"])
        let revoked = Date()
        try harness.waitUntil("the session ended", timeout: 5) { !session.isRunning }
        #expect(Date().timeIntervalSince(revoked) < 2.5)
        let outcome = InteropClient.outcome(of: session)
        #expect(outcome.connectEnd == "DRAINED", "\(outcome.json)")
        #expect(outcome.connectEndDetails.contains("token revoked"), "\(outcome.json)")
        // And a new call on it is refused.
        #expect(try client.run(token: old).errorCode == "UNAUTHENTICATED")
    }

    @Test func admissionTakesTheBurstThenHandsOutSlotsAtItsRate() {
        let admission = SessionAdmission(sessionsPerSecond: 10)
        let start = ContinuousClock.now
        var admitted = 0
        var waits: [Duration] = []
        for _ in 0..<40 {
            switch admission.admit(at: start) {
            case .admitted: admitted += 1
            case .refused(let wait): waits.append(wait)
            }
        }
        #expect(admitted == 10)
        #expect(waits.count == 30)
        // Successive slots, 100 ms apart, each jittered by up to one slot: the 30 refused
        // return over ~3 s, at the admission rate, not all at once.
        for (index, wait) in waits.enumerated() {
            let low = Duration.milliseconds(100 * (index + 1)), high = Duration.milliseconds(100 * (index + 3))
            #expect(wait >= low && wait <= high, "refusal \(index): \(wait)")
        }
        // A second later the bucket holds ten again.
        let later = start + .seconds(1)
        #expect((0..<10).allSatisfy { _ in admission.admit(at: later) == .admitted })
        #expect(admission.admit(at: later) != .admitted)
    }

    @Test func aSessionMailboxKeepsTheNewestStateAndTheDrainAndWakesOnce() async {
        let sessions = LiveSessions()
        let live = sessions.open(agent: "a", tokenSHA256: "t", connection: nil)
        let packaged = Date()
        let artifact = { (revision: String) in
            PackagedArtifact(source: "s", revision: revision, digest: "sha256:" + String(repeating: "0", count: 64), size: 1,
                             commit: "", origin: "", createdAt: packaged)
        }
        live.deliver(.desiredState(generation: 1, artifacts: [artifact("r1")]))
        live.deliver(.desiredState(generation: 2, artifacts: [artifact("r2")]))
        live.deliver(.drain(retryAfter: .seconds(1), reason: "bye", redirect: ""))
        let mail = live.takeMail()
        #expect(mail.count == 2)
        #expect(mail.first == .desiredState(generation: 2, artifacts: [artifact("r2")]))
        #expect(mail.last?.isDrain == true)
        #expect(live.takeMail().isEmpty)
        sessions.close(live)
        var wakes = 0
        for await event in live.events { if case .hub = event { wakes += 1 } }
        #expect(wakes == 1)
    }

    @Test func fetchBodiesWaitForRoomUnderTheBytesInFlightCeiling() async throws {
        let outbound = OutboundBytes(limit: 4 << 20)
        outbound.opened("ipv4:127.0.0.1:1000")
        outbound.opened("ipv4:127.0.0.1:1001")
        outbound.reserve(3 << 20, peer: "ipv4:127.0.0.1:1000")
        await outbound.waitForRoom()  // below the ceiling: at once

        outbound.reserve(2 << 20, peer: "ipv4:127.0.0.1:1001")  // 5 MiB: over the ceiling
        let resumed = Mutex(false)
        let waiter = Task {
            await outbound.waitForRoom()
            resumed.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(resumed.withLock { $0 } == false, "waits while 5 MiB of 4 are in flight")
        // The socket took the second connection's bytes (framing: a little more than reserved).
        outbound.sent((2 << 20) + 100, peer: "ipv4:127.0.0.1:1001")
        await waiter.value
        #expect(resumed.withLock { $0 })
        #expect(outbound.inFlight == 3 << 20, "never more counted out than the connection held")

        // A connection that closes gives back what it held; one already gone reserves nothing.
        outbound.closed("ipv4:127.0.0.1:1000")
        #expect(outbound.inFlight == 0)
        outbound.reserve(1 << 20, peer: "ipv4:127.0.0.1:1000")
        #expect(outbound.inFlight == 0)

        // A waiter whose Fetch is cancelled (the agent went away) leaves at once.
        outbound.reserve(5 << 20, peer: "ipv4:127.0.0.1:1001")
        let cancelled = Task { await outbound.waitForRoom() }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await cancelled.value
        #expect(outbound.inFlight == 5 << 20)
    }
}
