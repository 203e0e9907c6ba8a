import Foundation
import Testing

/// An agent given several relays (`relays` in agent.yaml, replicas that serve any agent) moves
/// to another one when its relay dies: at once when the process is killed (its connection is
/// reset), within the keepalive window when the relay freezes with its sockets open. Real
/// relay-server and relay-agent processes on loopback; each relay has its own registry here
/// (a shared one is PostgreSQL's job), which is enough for where the agent connects.
@Suite struct RelayFailoverTests {
    /// Two relays with one CA, one source, one agent to list both; both started (heartbeat
    /// 500 ms, the harness's).
    private static func twoRelays(_ prefix: String) throws -> RelayPair {
        let pair = try RelayPair(prefix)
        for relay in [pair.a, pair.b] { try relay.startRelay() }
        return pair
    }

    private static func connected(_ relay: RelayHarness) -> Bool {
        ((try? relay.relayMetrics()["relay_agents_connected"]) ?? 0) == 1
    }

    @Test func anAgentLeavesAKilledRelayForTheNextOneAndGetsItsRevisions() throws {
        let pair = try Self.twoRelays("failover-kill")
        defer { pair.shutdown() }
        let (a, b, repo) = (pair.a, pair.b, pair.repo)
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
        let pair = try Self.twoRelays("failover-freeze")
        defer { pair.shutdown() }
        let (a, b) = (pair.a, pair.b)
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
