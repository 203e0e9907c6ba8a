import Foundation
import Testing

/// An agent given several relays (`relays` in agent.yaml, replicas that serve any agent) moves
/// to another one when its relay dies: at once when the process is killed (its connection is
/// reset), within the keepalive window when the relay freezes with its sockets open. Real
/// relay-server and relay-agent processes on loopback; each relay has its own registry here
/// (a shared one is PostgreSQL's job), which is enough for where the agent connects.
@Suite struct RelayFailoverTests {
    /// Two relays with one CA, one source, one agent listing both.
    private static func twoRelays(_ prefix: String) throws -> (TemporaryDirectory, TemporaryDirectory, TestRepo, [RelayHarness]) {
        let dirA = try TemporaryDirectory(prefix: "\(prefix)-a")
        let dirB = try TemporaryDirectory(prefix: "\(prefix)-b")
        let repo = try TestRepo.create(at: dirA.appending("podinfo"))
        try repo.write("app.yaml", "a: 1\n")
        _ = try repo.commit("initial")
        let sources = [RelayHarness.Source(name: "podinfo", repo: repo, branch: "main")]
        let agents = [RelayHarness.Agent(name: "edge", token: "t-edge", sources: ["podinfo"])]
        let a = try RelayHarness(sources: sources, agents: agents, dir: dirA)
        try FileManager.default.copyItem(at: dirA.appending("tls"), to: dirB.appending("tls"))
        let b = try RelayHarness(sources: sources, agents: agents, dir: dirB)
        for relay in [a, b] { try relay.startRelay() }  // heartbeat 500 ms (the harness's)
        return (dirA, dirB, repo, [a, b])
    }

    private static func connected(_ relay: RelayHarness) -> Bool {
        ((try? relay.relayMetrics()["relay_agents_connected"]) ?? 0) == 1
    }

    @Test func anAgentLeavesAKilledRelayForTheNextOneAndGetsItsRevisions() throws {
        let (dirA, dirB, repo, relays) = try Self.twoRelays("failover-kill")
        defer { relays.forEach { $0.shutdown() }; dirA.remove(); dirB.remove() }
        let (a, b) = (relays[0], relays[1])
        try a.startAgent("edge", relayPorts: [a.tunnelPort, b.tunnelPort])
        try a.waitUntil("first artifact") { try !a.published("edge").isEmpty }
        try a.waitUntil("the agent on one relay") { Self.connected(a) != Self.connected(b) }
        let (on, other) = Self.connected(a) ? (a, b) : (b, a)

        on.killRelay()
        let moved = try a.waitUntil("the agent on the other relay", timeout: 10) { Self.connected(other) }
        #expect(moved < 5, "moved after \(moved) s")
        // The other relay serves it from now on: a push there reaches the agent.
        try repo.write("app.yaml", "a: 2\n")
        let commit = try repo.commit("second")
        try other.pushWebhook(source: other.sources[0])
        try a.waitUntil("the revision from the other relay") { try a.published("edge").contains { $0.revision == "main@sha1:\(commit)" } }
    }

    @Test func anAgentLeavesAFrozenRelayWithinTheKeepaliveWindow() throws {
        let (dirA, dirB, _, relays) = try Self.twoRelays("failover-freeze")
        defer { relays.forEach { $0.shutdown() }; dirA.remove(); dirB.remove() }
        let (a, b) = (relays[0], relays[1])
        try a.startAgent("edge", relayPorts: [a.tunnelPort, b.tunnelPort])
        try a.waitUntil("the agent on one relay") { Self.connected(a) != Self.connected(b) }
        let (on, other) = Self.connected(a) ? (a, b) : (b, a)

        // Frozen, not dead: its sockets stay open and nothing answers, as behind a lost link.
        // The supervisor shell's child named relay-server (the shell also runs `sleep`s).
        let children = try runProcess("/usr/bin/pgrep", ["-x", "-P", "\(try #require(on.relay).pid)", "relay-server"]).stdout
        let relayPID = try #require(children.split(separator: "\n").compactMap { Int32($0) }.first)
        kill(relayPID, SIGSTOP)
        defer { kill(relayPID, SIGCONT) }
        // Two PING intervals (0.5 s each) with no answer, then a new session on the other relay.
        let moved = try a.waitUntil("the agent on the other relay", timeout: 15) { Self.connected(other) }
        #expect(moved < 4, "moved after \(moved) s; agent log: \(a.agentLog("edge").suffix(3000))")
    }
}
