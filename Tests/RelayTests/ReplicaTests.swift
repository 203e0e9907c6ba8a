import Foundation
import Logging
import Testing
import Wire
@testable import RelayServer

/// Relay replicas on one real PostgreSQL (#13): three real relay-server processes, each with
/// its own data directory, thirty real relay-agent processes listing all three, two sources.
/// GitLab is the documented-API STAND-IN (it cannot run here); everything else is real.
@Suite(.serialized) struct ReplicaTests {
    /// Waits (bounded, async) until `condition` holds; returns the seconds it took.
    @discardableResult
    static func wait(_ what: String, timeout: Double, _ condition: () throws -> Bool) async throws -> Double {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if (try? condition()) == true { return Date().timeIntervalSince(start) }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("timed out after \(timeout) s waiting for \(what)")
        throw CancellationError()
    }

    static func streamEntries(_ file: URL) -> [[String: Any]] {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line -> [String: Any]? in
            guard line.hasPrefix("data: ") else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
        }
    }

    @Test func threeReplicasOnOnePostgreSQLServeEveryAgentAndLoseNothingWhenOneOrTheDatabaseDies() async throws {
        let notifyDir = try TemporaryDirectory(prefix: "replicas-notify")
        let standIn = try NotifyStandIn(dir: notifyDir)
        try Data(standIn.gitlabToken.utf8).write(to: notifyDir.appending("gitlab.token"))
        let cluster = try ReplicaCluster("replicas", replicas: 3, agents: 30)
        defer { cluster.shutdown(); standIn.stop(); notifyDir.remove() }
        for replica in cluster.replicas {
            replica.sourceExtraYAML["podinfo"] = "gitlab: {url: \"\(standIn.base)\", project: group/podinfo, tokenFile: \(notifyDir.appending("gitlab.token").path)}"
        }
        try cluster.startReplicas()
        try await Self.wait("both sources packaged", timeout: 60) { try cluster.sql("SELECT count(DISTINCT source) FROM revision") == "2" }
        let initial = try cluster.sql("SELECT digest FROM revision ORDER BY source").split(separator: "\n").map(String.init)
        try cluster.startAgents()
        // Generous: in the full parallel suite 30 agents, three relays and PostgreSQL start
        // beside every other suite on two cores (once seen over 90 s under .ci/run).
        do {
            try await Self.wait("30 agents hold both sources", timeout: 180) {
                try initial.allSatisfy { try cluster.deliveries(of: $0) == 30 }
            }
        } catch {
            Issue.record("\(cluster.diagnose(initial[0]))\n\(cluster.diagnose(initial[1]))")
            throw error
        }
        let spread = try cluster.connectedByReplica()
        #expect(spread.values.map(\.count).reduce(0, +) == 30)
        #expect(Set(spread.keys) == ["r0", "r1", "r2"], "30 agents spread over the three replicas: \(spread.mapValues(\.count))")

        // A webhook to replica r0 delivers to the agents on r1 and r2 as well.
        try cluster.repos[0].write("podinfo.yaml", "name: podinfo\nversion: 2\n")
        let second = try cluster.repos[0].commit("second")
        let hook = try cluster.replicas[0].pushWebhook(source: cluster.replicas[0].sources[0])
        #expect(hook.stdout.hasSuffix("202") || hook.stdout.hasSuffix("200"))
        try await Self.wait("second commit packaged", timeout: 30) { try !cluster.recordedDigest(source: 0, commit: second).isEmpty }
        let secondDigest = try cluster.recordedDigest(source: 0, commit: second)
        try await Self.wait("second commit at every agent", timeout: 60) { try cluster.deliveries(of: secondDigest) == 30 }
        for replica in ["r1", "r2"] {
            #expect(try cluster.sql("""
                SELECT count(*) FROM delivery d JOIN agent a ON a.name = d.agent WHERE d.digest = '\(secondDigest)' AND a.replica = '\(replica)'
                """) == "\(spread[replica]?.count ?? -1)")
        }
        for agent in cluster.agents {
            #expect(try cluster.replicas[0].published(agent.name).contains { $0.digest == secondDigest }, "\(agent.name) serves the new digest")
        }

        // Status from an agent on r2 reaches a live reader of r0 once, in order.
        let onR2 = try #require(spread["r2"]?.first)
        let streamFile = cluster.base.appending("stream-r0.txt")
        let stream = try BackgroundProcess(name: "sse", executable: "/usr/bin/env", arguments: [
            "curl", "-sN", "--max-time", "120", "-H", "Authorization: Bearer \(cluster.replicas[0].readerToken)",
            "http://127.0.0.1:\(cluster.replicas[0].httpPort)/api/v1/stream?agent=\(onR2)"], logFile: streamFile)
        defer { stream.stop() }
        try await Self.wait("stream open", timeout: 20) {
            (try? String(contentsOf: streamFile, encoding: .utf8))?.contains("relay status stream") == true
        }
        let fluxPort = try #require(cluster.replicas[0].fluxPorts[onR2])
        var sentToR2: [String] = []
        for index in 1...20 {
            let message = "r2 event \(index)"
            #expect(try StatusUplinkTests.postEvent(port: fluxPort, key: ReplicaCluster.eventKey, message: message) == 202)
            sentToR2.append(message)
        }
        try await Self.wait("20 events on r0's stream", timeout: 30) { Self.streamEntries(streamFile).count >= 20 }
        try await Task.sleep(for: .seconds(1))  // nothing more may come
        let streamed = Self.streamEntries(streamFile)
        #expect(streamed.compactMap { ($0["event"] as? [String: Any])?["message"] as? String } == sentToR2)
        let ids = streamed.compactMap { $0["id"] as? Int }
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)

        // Each GitLab status is posted by one replica: Flux objects of five agents report
        // ready at the second commit (stored as a replica stores them; the kube watch is the
        // agent side's, tested elsewhere), and all three replicas' notifiers run.
        let registry = Registry(store: try await PostgresStore.open(
            .init(host: "127.0.0.1", port: cluster.postgres.port, database: cluster.postgres.database, user: cluster.postgres.user),
            logger: Logger(label: "test")))
        let reporters = Array(cluster.agents.prefix(5).map(\.name))
        for agent in reporters {
            _ = try await registry.storeStatus(agent: agent, journal: "kube", entries: [.with {
                $0.sequence = 1
                $0.object = .with {
                    $0.apiVersion = "kustomize.toolkit.fluxcd.io/v1"; $0.kind = "Kustomization"; $0.namespace = "flux-system"
                    $0.name = "podinfo"; $0.state = "ready"; $0.revisionApplied = "main@sha1:\(second)"; $0.source = "podinfo"
                }
            }])
        }
        func successes() throws -> [String] {
            try standIn.requests("gitlab").filter { $0["status"] as? Int == 201 && $0["sha"] as? String == second }
                .compactMap { $0["params"] as? [String: Any] }.filter { $0["state"] as? String == "success" }
                .compactMap { $0["name"] as? String }
        }
        try await Self.wait("five GitLab statuses", timeout: 30) { try successes().count >= 5 }
        try await Task.sleep(for: .seconds(4))  // two more notifier rounds on every replica
        #expect(try successes().sorted() == reporters.map { "relay/\($0)/flux-system/podinfo" }.sorted())

        // kill -9 of the replica with the most agents, during a delivery and a status burst.
        let victimName = try #require(spread.max { $0.value.count < $1.value.count }?.key)
        let victim = Int(victimName.dropFirst())!
        let survivor = (victim + 1) % 3
        // The burst: five agents on the victim report events while it dies.
        let onVictim = Array(try #require(spread[victimName]).prefix(5))
        var sentToVictim: [String: [String]] = [:]
        func burst(_ count: Int) throws {
            for agent in onVictim {
                let port = try #require(cluster.replicas[0].fluxPorts[agent])
                for _ in 0..<count {
                    let message = "burst \(sentToVictim[agent, default: []].count + 1)"
                    #expect(try StatusUplinkTests.postEvent(port: port, key: ReplicaCluster.eventKey, message: message) == 202)
                    sentToVictim[agent, default: []].append(message)
                }
            }
        }
        try burst(3)
        try cluster.repos[1].write("infra.yaml", "name: infra\nversion: 2\n")
        let third = try cluster.repos[1].commit("third")
        _ = try cluster.replicas[survivor].pushWebhook(source: cluster.replicas[survivor].sources[1])
        try await Task.sleep(for: .milliseconds(300))
        let killedAt = Date()
        cluster.replicas[victim].killRelay()
        try burst(3)
        try await Self.wait("every agent connected again", timeout: 30) {
            (0..<3).filter { $0 != victim }.compactMap(cluster.liveSessions).reduce(0, +) == 30
        }
        let back = Date().timeIntervalSince(killedAt)
        #expect(back < 30)
        print("replicas: \(spread[victimName]?.count ?? 0) agents of killed \(victimName) connected again after \(String(format: "%.1f", back)) s")
        try await Self.wait("third commit packaged", timeout: 30) { try !cluster.recordedDigest(source: 1, commit: third).isEmpty }
        let thirdDigest = try cluster.recordedDigest(source: 1, commit: third)
        do {
            try await Self.wait("third commit at every agent", timeout: 60) { try cluster.deliveries(of: thirdDigest) == 30 }
        } catch {
            Issue.record("\(cluster.diagnose(thirdDigest))")
            throw error
        }
        func events(_ agent: String) async throws -> [StatusRecord] {
            // The burst's events (the agent may also be the one that reported to r0's stream).
            try await registry.timeline(.init(agent: agent, limit: 1000)).filter { $0.event?.message.hasPrefix("burst") == true }
        }
        /// Every event each agent sent, once, in order (waits up to 30 s for them to arrive).
        func expectBurstStored(_ when: String) async throws {
            for agent in onVictim {
                let sent = sentToVictim[agent] ?? []
                var stored: [StatusRecord] = []
                for _ in 0..<150 where stored.count < sent.count {
                    stored = try await events(agent)
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(stored.map { $0.event?.message ?? "" } == sent, "\(agent): every event it sent, once, in order (\(when))")
                #expect(stored.map(\.sequence) == stored.map(\.sequence).sorted())
            }
        }
        try await expectBurstStored("after the kill")

        // PostgreSQL killed and restarted under the replicas: they reconnect and go on.
        cluster.postgres.kill9()
        try await Task.sleep(for: .seconds(1))
        try cluster.postgres.start()
        try cluster.repos[0].write("podinfo.yaml", "name: podinfo\nversion: 4\n")
        let fourth = try cluster.repos[0].commit("fourth")
        try await Self.wait("a webhook accepted after the restart", timeout: 30) {
            let answer = try cluster.replicas[survivor].pushWebhook(source: cluster.replicas[survivor].sources[0])
            return answer.stdout.hasSuffix("202") || answer.stdout.hasSuffix("200")
        }
        try await Self.wait("fourth commit packaged", timeout: 60) { try !cluster.recordedDigest(source: 0, commit: fourth).isEmpty }
        let fourthDigest = try cluster.recordedDigest(source: 0, commit: fourth)
        try await Self.wait("fourth commit at every agent", timeout: 60) { try cluster.deliveries(of: fourthDigest) == 30 }
        try burst(10)
        try await expectBurstStored("after the database restart")
        await registry.store.close()
    }

    /// A replica that packages a recorded commit into a different artifact with the same
    /// configuration (TEST HOOK `RELAY_TEST_EXTRA_IGNORE`: its packaging drops a file the
    /// other's keeps, as a non-reproducible build would) refuses to serve it.
    @Test func aReplicaWhosePackagingGivesAnotherDigestRefusesToServeIt() async throws {
        let cluster = try ReplicaCluster("replicas-mismatch", replicas: 2, agents: 1)
        defer { cluster.shutdown() }
        try cluster.repos[0].write("README.md", "# podinfo\n")
        let commit = try cluster.repos[0].commit("readme")
        try cluster.replicas[0].startRelay()
        try await Self.wait("r0 packaged both sources", timeout: 60) { try cluster.sql("SELECT count(DISTINCT source) FROM revision") == "2" }
        let recorded = try cluster.recordedDigest(source: 0, commit: commit)
        try cluster.replicas[1].startRelay(environment: ["RELAY_TEST_EXTRA_IGNORE": "*.md"])
        let agent = cluster.agents[0].name
        try cluster.replicas[0].startAgent(agent, relayPorts: [cluster.replicas[1].tunnelPort])
        let infra = try cluster.sql("SELECT digest FROM revision WHERE source = 'infra'")
        try await Self.wait("the agent on r1 holds infra", timeout: 60) { try cluster.deliveries(of: infra) == 1 }
        func mismatches() -> Double {
            let text = (try? HTTPProbe.request("http://127.0.0.1:\(cluster.replicas[1].httpPort)/metrics").text) ?? ""
            return text.split(separator: "\n").first { $0.hasPrefix("relay_replica_digest_mismatches_total{source=\"podinfo\"}") }
                .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
        }
        try await Self.wait("r1 counted the mismatch", timeout: 30) { mismatches() >= 1 }
        try await Task.sleep(for: .seconds(2))
        #expect(try cluster.deliveries(of: recorded) == 0)
        #expect(try cluster.replicas[0].published(agent).map(\.source) == ["infra"])
        // Only r0's digest is recorded for that commit.
        #expect(try cluster.sql("SELECT count(DISTINCT digest) FROM revision WHERE source = 'podinfo'") == "1")
    }

    /// `relay-server db copy`, as an operator moves a running single relay to PostgreSQL: stop
    /// it, add database.postgres, copy, start again on PostgreSQL; the agent's record and its
    /// deliveries are there, and a second copy is refused.
    @Test func aSingleRelayMovesToPostgreSQLWithDbCopy() async throws {
        let (dir, _, harness) = try RelayHarness.single("dbcopy")
        let postgres = try PostgresServer(prefix: "dbcopy-pg")
        defer { harness.shutdown(); postgres.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("edge holds podinfo") { try !harness.published("edge").isEmpty }
        let digest = try #require(try harness.published("edge").first?.digest)
        harness.stopAgent("edge")
        harness.stopRelay()

        let database = "database: {postgres: {host: 127.0.0.1, port: \(postgres.port), database: \(postgres.database), user: \(postgres.user)}}\n"
        let config = dir.appending("relay.yaml")
        try (try String(contentsOf: config, encoding: .utf8) + database).write(to: config, atomically: true, encoding: .utf8)
        let copy = try runProcess(Binaries.relayServer, ["db", "copy", "--config", config.path], timeout: 120, allowFailure: true)
        #expect(copy.status == 0, "\(copy.stderr)")
        #expect(copy.stdout.contains("delivery\t1"), "\(copy.stdout)")
        #expect(try postgres.sql("SELECT count(*) FROM delivery WHERE agent = 'edge' AND digest = '\(digest)'") == "1")
        let again = try runProcess(Binaries.relayServer, ["db", "copy", "--config", config.path], timeout: 120, allowFailure: true)
        #expect(again.status == 1)
        #expect(again.stderr.contains("already holds a registry"), "\(again.stderr)")

        // The CLI works on the PostgreSQL registry too.
        let listed = try runProcess(Binaries.relayServer, ["agents", "list", "--config", config.path], timeout: 60, allowFailure: true)
        #expect(listed.status == 0 && listed.stdout.contains("edge"), "\(listed.stdout)\(listed.stderr)")

        // The relay on PostgreSQL knows the agent and what it holds.
        harness.relayExtraYAML = database
        try harness.startRelay()
        let answer = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/agents",
                                           headers: ["Authorization: Bearer \(harness.readerToken)"])
        let agents = try #require(try JSONSerialization.jsonObject(with: answer.body) as? [[String: Any]])
        #expect(agents.map { $0["name"] as? String } == ["edge"])
        #expect(try postgres.sql("SELECT count(*) FROM revision WHERE source = 'podinfo'") != "0")
    }
}

