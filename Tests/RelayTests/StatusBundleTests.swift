import Foundation
import Provenance
@testable import RelayServer
import Testing
import Wire

/// Status over the air gap (agent → relay): an offline agent (no `relay` in agent.yaml) writes
/// a signed status bundle, the relay verifies it under the agent's trusted key and stores it as
/// if it had come over the tunnel. Real processes: relay-server, relay-agent, the CLIs.
@Suite struct StatusBundleTests {
    /// A relay (agents `edge` and `other`) and an offline `edge` agent that received Flux events.
    final class Setup: @unchecked Sendable {
        let dir: TemporaryDirectory
        let harness: RelayHarness
        var relayConfig: String { dir.appending("relay.yaml").path }
        var base: String { "http://127.0.0.1:\(harness.httpPort)" }

        init(_ prefix: String, configure: (TemporaryDirectory, RelayHarness) throws -> Void = { _, _ in }) throws {
            dir = try TemporaryDirectory(prefix: prefix)
            let repo = try TestRepo.create(at: dir.appending("podinfo"))
            try repo.write("app.yaml", "a: 1\n")
            _ = try repo.commit("initial")
            harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo"]),
                                                .init(name: "other", token: "t-other", sources: ["podinfo"])], dir: dir)
            try configure(dir, harness)
            try harness.startRelay()
            try offlineAgentConfig("edge")
        }

        /// The offline agent `edge` runs and receives these Flux events; it is returned running
        /// (the caller stops it).
        func receiveEvents(_ events: [String]) throws -> BackgroundProcess {
            try Data("event-key\n".utf8).write(to: dir.appending("events.key"))
            let port = try LoopbackPort.free()
            let config = try offlineAgentConfig("edge", extra: "listen: 127.0.0.1:\(port)\nflux: {events: {hmacTokenFile: \(dir.appending("events.key").path)}}\n")
            let agent = try BackgroundProcess(name: "relay-agent-edge", executable: Binaries.relayAgent, arguments: ["run", "--config", config],
                                              logFile: dir.appending("agent-edge.log"))
            try harness.waitUntil("offline agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
            for message in events {
                #expect(try StatusUplinkTests.postEvent(port: port, key: "event-key", message: message) == 202)
            }
            return agent
        }

        /// agent.yaml of an offline agent: a name, a data directory, no relay.
        @discardableResult
        func offlineAgentConfig(_ name: String, dataDir: String? = nil, extra: String = "") throws -> String {
            let url = dir.appending("offline-\(name).yaml")
            try Data("name: \(name)\ndataDir: \(dataDir ?? dir.appending("agent-\(name)").path)\n\(extra)".utf8).write(to: url)
            return url.path
        }

        func agent(_ arguments: [String], allowFailure: Bool = false) throws -> ProcessOutput {
            try runProcess(Binaries.relayAgent, arguments, allowFailure: allowFailure)
        }

        func relay(_ arguments: [String], allowFailure: Bool = false) throws -> ProcessOutput {
            try runProcess(Binaries.relayServer, arguments + ["--config", relayConfig], allowFailure: allowFailure)
        }

        /// `relay-agent keys public` of agent `name`, written to `<name>.pub`.
        func publicKey(_ name: String) throws -> String {
            let output = try agent(["keys", "public", "--config", dir.appending("offline-\(name).yaml").path])
            let file = dir.appending("\(name).pub")
            try Data(output.stdout.utf8).write(to: file)
            return file.path
        }

        func exportStatus(_ name: String) throws -> (path: String, summary: [String: Any]) {
            let file = dir.appending("status-\(name)-\(UUID().uuidString.prefix(8)).json").path
            let output = try agent(["export-status", "--config", dir.appending("offline-\(name).yaml").path, "--output", file])
            return (file, try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]))
        }

        /// `relay-server bundle import`: exit status and the JSON it printed.
        func importBundle(_ path: String) throws -> (status: Int32, json: [String: Any]) {
            let output = try relay(["bundle", "import", path], allowFailure: true)
            return (output.status, (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]) ?? [:])
        }

        func get(_ path: String) throws -> HTTPProbe {
            try HTTPProbe.request(base + path, headers: ["Authorization: Bearer \(harness.readerToken)"])
        }

        /// The event messages of `agent` in the relay's timeline API.
        func timelineMessages(agent: String = "edge") throws -> [String] {
            let entries = try #require(try get("/api/v1/timeline?agent=\(agent)&limit=1000").json?["entries"] as? [[String: Any]])
            return entries.compactMap { ($0["event"] as? [String: Any])?["message"] as? String }
        }

        func agentSummary(_ name: String) throws -> [String: Any]? {
            let agents = try JSONSerialization.jsonObject(with: get("/api/v1/agents").body) as? [[String: Any]]
            return agents?.first { $0["name"] as? String == name }
        }

        func shutdown() {
            harness.shutdown()
            dir.remove()
        }
    }

    @Test func anOfflineAgentsStatusReachesTheRelaysTimelineAndLiveStreamOnceByBundle() throws {
        let setup = try Setup("status-bundle")
        defer { setup.shutdown() }
        let agent = try setup.receiveEvents(["applied offline 1", "applied offline 2"])
        defer { agent.stop() }
        let pub = try setup.publicKey("edge")
        // The agent runs (it holds the journal): the CLI has it write the bundle through its inbox.
        let (bundle, exported) = try setup.exportStatus("edge")
        #expect(exported["entries"] as? Int == 2)
        #expect(exported["agent"] as? String == "edge")
        agent.stop()

        // A live reader of the running relay, subscribed before the import: what it shows
        // arrives through the live feed, not from its initial read of the database.
        let streamFile = setup.dir.appending("stream.txt")
        let stream = try BackgroundProcess(name: "sse", executable: "/usr/bin/env",
                                           arguments: ["curl", "-sN", "--max-time", "30", "-H", "Authorization: Bearer \(setup.harness.readerToken)",
                                                       "\(setup.base)/api/v1/stream?agent=edge"], logFile: streamFile)
        defer { stream.stop() }
        try setup.harness.waitUntil("stream open") { (try? String(contentsOf: streamFile, encoding: .utf8))?.contains("relay status stream") == true }

        // No key trusted yet: refused, with what to do; nothing stored.
        let untrusted = try setup.importBundle(bundle)
        #expect(untrusted.status == 3)
        #expect(untrusted.json["code"] as? String == "no_trusted_key")
        #expect(try setup.timelineMessages().isEmpty)

        try setup.relay(["agents", "trust", "edge", pub])
        let imported = try setup.importBundle(bundle)
        #expect(imported.status == 0)
        #expect(imported.json["stored"] as? Int == 2)
        #expect(imported.json["duplicates"] as? Int == 0)
        #expect(imported.json["up_to"] as? Int == 2)
        #expect(imported.json["journal"] as? String == exported["journal"] as? String)
        #expect(try setup.timelineMessages() == ["applied offline 1", "applied offline 2"])
        try setup.harness.waitUntil("imported entries on the running relay's live stream", timeout: 10) {
            (try? String(contentsOf: streamFile, encoding: .utf8))?.contains("applied offline 2") == true
        }
        let streamed = try String(contentsOf: streamFile, encoding: .utf8)
        #expect(streamed.components(separatedBy: "applied offline 1").count == 2, "each entry streamed once")

        // Importing again stores nothing new.
        let again = try setup.importBundle(bundle)
        #expect(again.status == 0)
        #expect(again.json["stored"] as? Int == 0)
        #expect(again.json["duplicates"] as? Int == 2)
        #expect(try setup.timelineMessages().count == 2)

        // The status API shows the import and how old the newest status is.
        let summary = try #require(try setup.agentSummary("edge"))
        let offline = try #require(summary["offline"] as? [String: Any])
        #expect((offline["lastStatusImport"] as? [String: Any])?["entries"] as? Int == 2)
        #expect(offline["newestStatusAt"] is String)
        #expect(summary["newestStatusAgeSeconds"] is Double)
        #expect(summary["connected"] as? Bool == false)

        // Exporting is not an acknowledgement: the journal still holds both entries (the agent
        // is stopped now: the CLI writes it from the data directory).
        #expect(try setup.exportStatus("edge").summary["entries"] as? Int == 2)
        // An agent.yaml without `name` cannot sign for an agent: a config error (exit 2), no file.
        let unnamed = try setup.harness.agentConfig("other")
        let output = setup.dir.appending("unnamed.json")
        #expect(try setup.agent(["export-status", "--config", unnamed.path, "--output", output.path], allowFailure: true).status == 2)
        #expect(!FileManager.default.fileExists(atPath: output.path))
        #expect(!FileManager.default.fileExists(atPath: setup.dir.appending("agent-other/agent.key").path), "no key made for it")
    }

    @Test func aStatusBundleSignedByAnotherAgentsKeyOrAlteredIsRefusedAndNothingIsStored() throws {
        let setup = try Setup("status-bundle-tamper")
        defer { setup.shutdown() }
        try setup.receiveEvents(["genuine"]).stop()
        try setup.relay(["agents", "trust", "edge", try setup.publicKey("edge")])
        // Agent `other` has its own key, trusted for `other`.
        try setup.offlineAgentConfig("other")
        try setup.relay(["agents", "trust", "other", try setup.publicKey("other")])
        let (bundle, _) = try setup.exportStatus("edge")
        let genuine = try JSONDecoder().decode(SignedEnvelope.self, from: Data(contentsOf: URL(fileURLWithPath: bundle)))
        func write(_ envelope: SignedEnvelope, _ name: String) throws -> String {
            let path = setup.dir.appending(name).path
            try SignedEnvelope.encoder.encode(envelope).write(to: URL(fileURLWithPath: path))
            return path
        }

        // edge's entries signed with other's key.
        let otherKey = try SigningKey.load(path: setup.dir.appending("agent-other/agent.key").path)
        let impostor = try write(SignedEnvelope.sign(genuine.statement, with: otherKey), "impostor.json")
        // The same, with a key no agent is trusted with.
        let stranger = try write(SignedEnvelope.sign(genuine.statement, with: SigningKey.loadOrCreate(path: setup.dir.appending("stranger.key").path).key), "stranger.json")
        // One byte of the signed statement changed (the journal's first character).
        var altered = genuine
        let journalField = try #require(altered.statement.range(of: Data("\"journalID\":\"".utf8)))
        altered.statement[journalField.upperBound] ^= 0x01
        let flipped = try write(altered, "flipped.json")
        // One byte of the file flipped (inside the base64 statement).
        var raw = try Data(contentsOf: URL(fileURLWithPath: bundle))
        raw[raw.count / 2] ^= 0x04
        let corrupted = setup.dir.appending("corrupted.json").path
        try raw.write(to: URL(fileURLWithPath: corrupted))

        // Bigger than any status bundle (sparse): refused before it is read.
        let huge = setup.dir.appending("huge.json")
        FileManager.default.createFile(atPath: huge.path, contents: nil)
        try FileHandle(forWritingTo: huge).truncate(atOffset: StatusBundleFile.maxBytes + 1)

        for (file, codes) in [(impostor, ["wrong_agent"]), (stranger, ["bad_signature"]), (flipped, ["bad_signature"]),
                              (corrupted, ["bad_signature", "malformed"]), (huge.path, ["too_large"])] {
            let refused = try setup.importBundle(file)
            #expect(refused.status == 3, "\(file)")
            #expect(codes.contains(refused.json["code"] as? String ?? ""), "\(file): \(refused.json)")
            #expect(refused.json["ok"] as? Bool == false)
        }
        #expect(try setup.timelineMessages().isEmpty, "nothing stored on refusal")
        #expect(try setup.agentSummary("edge")?["offline"] == nil, "no import recorded on refusal")

        // The relay is still healthy and takes the genuine bundle.
        #expect(try HTTPProbe.request(setup.base + "/healthz").status == 200)
        #expect(try setup.importBundle(bundle).json["stored"] as? Int == 1)
        #expect(try setup.timelineMessages() == ["genuine"])
    }
}

extension StatusBundleTests {
    /// An imported status drives what a tunnel's would: GitLab commit statuses (GitLab is the
    /// STAND-IN), the applied revision and, from the inventory, the delivery. The bundle is
    /// signed with the agent's real key; its one entry is a Kustomization state as the agent's
    /// status watcher journals it.
    @Test func importedStatusBecomesGitLabStatusesAndCountsAsDeliveredAndApplied() throws {
        var notify: NotifyStandIn?
        let setup = try Setup("status-bundle-gitlab") { dir, harness in
            let standIn = try NotifyStandIn(dir: dir)
            notify = standIn
            try Data(standIn.gitlabToken.utf8).write(to: dir.appending("gitlab.token"))
            harness.sourceExtraYAML["podinfo"] = "gitlab: {url: \"\(standIn.base)\", project: group/podinfo, tokenFile: \(dir.appending("gitlab.token").path)}"
        }
        let standIn = try #require(notify)
        defer { setup.shutdown(); standIn.stop() }
        try setup.relay(["agents", "trust", "edge", try setup.publicKey("edge")])
        var packaged: [String: Any] = [:]
        try setup.harness.waitUntil("podinfo packaged") {
            packaged = (try JSONSerialization.jsonObject(with: setup.get("/api/v1/sources/podinfo/revisions").body) as? [[String: Any]])?.first ?? [:]
            return packaged["digest"] != nil
        }
        let revision = try #require(packaged["revision"] as? String)
        let digestText = try #require(packaged["digest"] as? String)
        let digest = try #require(SHA256Digest(digestText))
        let commit = try #require(packaged["commit"] as? String)

        let entry = Relay_V1_StatusEntry.with {
            $0.sequence = 1
            $0.observedUnixMs = Int64(Date().timeIntervalSince1970 * 1000)
            $0.object = .with {
                $0.apiVersion = "kustomize.toolkit.fluxcd.io/v1"
                $0.kind = "Kustomization"
                $0.namespace = "flux-system"
                $0.name = "podinfo"
                $0.state = "ready"
                $0.message = "Applied revision: \(revision)"
                $0.revisionApplied = revision
                $0.revisionAttempted = revision
                $0.source = "podinfo"
            }
        }
        let batch = Relay_V1_StatusBatch.with { $0.journalID = "offline-journal"; $0.entries = [entry] }
        let statement = StatusStatement(agent: "edge", createdUnixMs: Int64(Date().timeIntervalSince1970 * 1000), journalID: "offline-journal",
                                        statusBatch: try batch.serializedBytes(), entryCount: 1,
                                        inventory: [HeldArtifact(source: "podinfo", revision: revision, digest: digest)], lastBundleSequence: 0)
        let key = try SigningKey.load(path: setup.dir.appending("agent-edge/agent.key").path)
        let file = setup.dir.appending("status-gitlab.json")
        try StatusBundleFile.write(SignedEnvelope.sign(statement.encoded(), with: key), to: file)
        let imported = try setup.importBundle(file.path)
        #expect(imported.json["stored"] as? Int == 1)
        #expect(imported.json["delivered"] as? Int == 1)

        try setup.harness.waitUntil("GitLab success for the applied commit", timeout: 15) {
            try standIn.requests("gitlab").contains {
                $0["status"] as? Int == 201 && $0["sha"] as? String == commit && ($0["params"] as? [String: Any])?["state"] as? String == "success"
            }
        }
        let revisions = try #require(try JSONSerialization.jsonObject(with: setup.get("/api/v1/sources/podinfo/revisions").body) as? [[String: Any]])
        let edge = try #require((revisions.first?["agents"] as? [[String: Any]])?.first { $0["agent"] as? String == "edge" })
        #expect(edge["delivered"] as? Bool == true)
        #expect(edge["applied"] as? Bool == true)
        #expect(edge["healthy"] as? Bool == true)

        // The agents API: the last relay bundle exported beside the last status bundle imported.
        #expect(((try setup.agentSummary("edge")?["offline"] as? [String: Any])?["lastBundleExport"]) == nil)
        try setup.relay(["bundle", "export", "--agent", "edge", "--output", setup.dir.appending("edge.bundle").path])
        let offline = try #require(try setup.agentSummary("edge")?["offline"] as? [String: Any])
        #expect((offline["lastBundleExport"] as? [String: Any])?["sequence"] as? Int == 1)
        #expect((offline["lastStatusImport"] as? [String: Any])?["upTo"] as? Int == 1)
    }
}

/// The live feed hands out every stored record once, in feed-id order, whoever stored it:
/// two tunnel sessions publishing out of order, or `relay-server bundle import` in another
/// process (rows this process never publishes itself).
@Suite struct StatusFeedOrderTests {
    @Test func recordsPublishedOutOfOrderOrStoredByAnotherWriterReachReadersOnceInIdOrder() async throws {
        let dir = try TemporaryDirectory(prefix: "feed-order")
        defer { dir.remove() }
        let registry = try Registry(path: dir.appending("relay.sqlite"))
        let feed = StatusFeed(after: try await registry.latestStatusID())
        let follower = Task { await feed.follow(registry, interval: .milliseconds(100)) }
        defer { follower.cancel() }
        // Generous: in the full suite, tests that block threads can starve this process's
        // cooperative pool for many seconds; the loop ends as soon as the five arrive.
        let deadline = ContinuousClock.now + .seconds(120)
        while !feed.isFollowing, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        let subscription = feed.subscribe()
        let ticker = Task { while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)); subscription.tick() } }
        defer { ticker.cancel() }
        func entries(_ count: UInt64) -> [Relay_V1_StatusEntry] {
            (1...count).map { sequence in .with { $0.sequence = sequence; $0.event = .with { $0.message = "m\(sequence)" } } }
        }
        let first = try await registry.storeStatus(agent: "a", journal: "j1", entries: entries(2))
        let second = try await registry.storeStatus(agent: "b", journal: "j2", entries: entries(2))
        _ = try await registry.storeStatus(agent: "c", journal: "j3", entries: entries(1))  // "another process": never published here
        feed.publish(second)  // before `first`, as a session that committed later but published first
        feed.publish(first)
        feed.publish(second)  // again
        var ids: [Int64] = []
        for await event in subscription {
            if case .entries(let batch) = event { ids += batch.map(\.id) }
            if ids.count >= 5 || ContinuousClock.now > deadline { break }
        }
        try await Task.sleep(for: .milliseconds(300))  // nothing more (no duplicates) arrives
        subscription.finish()
        for await event in subscription { if case .entries(let batch) = event { ids += batch.map(\.id) } }
        #expect(ids == [1, 2, 3, 4, 5])
    }
}

/// What the relay acknowledges, and what it refuses to store twice, outlives status retention:
/// an agent offline for longer than `status.retention.maxAge` still gets its acknowledgement,
/// and an old status bundle imported again after retention stores nothing.
@Suite struct StatusJournalMarkTests {
    @Test func acknowledgementsAndDuplicateDetectionSurviveRetention() async throws {
        let dir = try TemporaryDirectory(prefix: "journal-mark")
        defer { dir.remove() }
        let registry = try Registry(path: dir.appending("relay.sqlite"))
        let entries: [Relay_V1_StatusEntry] = (UInt64(1)...3).map { sequence in
            .with { $0.sequence = sequence; $0.event = .with { $0.message = "m\(sequence)" } }
        }
        #expect(try await registry.storeStatus(agent: "edge", journal: "j1", entries: entries).count == 3)
        #expect(try await registry.statusAcknowledgement(agent: "edge") == StatusAcknowledgement(journalID: "j1", upTo: 3))

        // Retention removes every row.
        #expect(try await registry.deleteStatus(below: Int64.max, batch: 1000) == 3)
        #expect(try await registry.statusAcknowledgement(agent: "edge") == StatusAcknowledgement(journalID: "j1", upTo: 3))
        // The same bundle again: nothing stored, nothing in the feed's table.
        #expect(try await registry.storeStatus(agent: "edge", journal: "j1", entries: entries).isEmpty)
        #expect(try await registry.timeline(.init(agent: "edge", limit: 100)).isEmpty)
        // What is new in that journal is stored, and acknowledged.
        let next: Relay_V1_StatusEntry = .with { $0.sequence = 4; $0.event = .with { $0.message = "m4" } }
        #expect(try await registry.storeStatus(agent: "edge", journal: "j1", entries: entries + [next]).map(\.id) == [4])
        #expect(try await registry.statusAcknowledgement(agent: "edge") == StatusAcknowledgement(journalID: "j1", upTo: 4))
    }
}
