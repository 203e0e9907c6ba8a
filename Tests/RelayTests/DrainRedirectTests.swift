import Foundation
import Testing

/// A relay that shuts down can send its agents to another relay (`drainRedirect`): the agent
/// reconnects there, not back to the relay in its configuration.
@Suite struct DrainRedirectTests {
    @Test func aDrainingRelaySendsTheAgentToAnotherRelay() throws {
        let pair = try RelayPair("redirect")
        defer { pair.shutdown() }
        let (a, b, repo, sources) = (pair.a, pair.b, pair.repo, pair.a.sources)
        try b.startRelay()
        a.relayExtraYAML = "drainRedirect: 127.0.0.1:\(b.tunnelPort)\n"
        try a.startRelay()
        try a.startAgent("edge")
        try a.waitUntil("artifact from relay A") { try !a.published("edge").isEmpty }

        a.stopRelay()  // SIGTERM: drain, naming B
        try a.waitUntil("agent at relay B") { b.relayLog.contains("agent connected") && b.relayLog.contains("agent=edge") }
        #expect(a.agentLog("edge").contains("to=127.0.0.1:\(b.tunnelPort)"))
        // B serves it from now on: a push to B reaches the agent.
        try repo.write("app.yaml", "a: 2\n")
        let commit = try repo.commit("second")
        try b.pushWebhook(source: sources[0])
        try a.waitUntil("revision from relay B") { try a.published("edge").contains { $0.revision == "main@sha1:\(commit)" } }
        #expect(!a.agentLog("edge").contains("tunnel down"), "\(a.agentLog("edge"))")
    }

    @Test func anUnreachableRedirectSendsTheAgentBackToItsConfiguredRelay() throws {
        let (dir, _, harness) = try RelayHarness.single("redirect-dead")
        defer { harness.shutdown(); dir.remove() }
        harness.relayExtraYAML = "drainRedirect: 127.0.0.1:\(try LoopbackPort.free())\n"  // nothing listens there
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact") { try !harness.published("edge").isEmpty }
        harness.stopRelay()
        try harness.startRelay()
        try harness.waitUntil("back at the configured relay", timeout: 30) {
            harness.agentLog("edge").contains("going back to the configured one") && harness.currentRelayLog.contains("agent connected")
        }
    }
}
