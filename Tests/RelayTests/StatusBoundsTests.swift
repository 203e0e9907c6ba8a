import Foundation
@testable import RelayServer
import Synchronization
import Testing
import Wire

/// Status data stays bounded: slow stream readers, large events, retention and big timeline
/// requests cannot grow the relay's memory or database without limit (real relay and agent
/// processes; load and slow readers from Fixtures/status/status_clients.py).
@Suite struct StatusBoundsTests {
    static let clients = StatusFeedTests.fixture("status/status_clients.py")

    /// `status_clients.py post`: the HTTP status of every POST, counted.
    static func post(port: Int, count: Int, messageBytes: Int = 100, metadataKeys: Int = 0, metadataBytes: Int = 0,
                     connections: Int = 2) throws -> [String: Int] {
        let output = try runProcess(findExecutable("python3") ?? "/usr/bin/python3", [
            clients, "post", "--port", "\(port)", "--count", "\(count)", "--message-bytes", "\(messageBytes)",
            "--metadata-keys", "\(metadataKeys)", "--metadata-bytes", "\(metadataBytes)", "--connections", "\(connections)",
        ], timeout: 180)
        let result = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]
        return result?["statuses"] as? [String: Int] ?? [:]
    }

    /// Status entries the relay stored since it started (its metric).
    static func stored(_ harness: RelayHarness) throws -> Int {
        Int(try harness.relayMetrics()["relay_status_entries_total"] ?? 0)
    }

    /// Every feed id at the relay, oldest first, read page by page from the timeline.
    static func allIDs(_ harness: RelayHarness) throws -> [Int] {
        var ids: [Int] = []
        var since = 0
        for _ in 0..<10_000 {
            let page = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/timeline?since=\(since)&limit=1000",
                                             headers: ["Authorization: Bearer \(harness.readerToken)"])
            let json = try #require(page.json, "timeline answered \(page.status): \(page.text.prefix(300))")
            let entries = try #require(json["entries"] as? [[String: Any]])
            if entries.isEmpty { break }
            ids += entries.compactMap { $0["id"] as? Int }
            since = try #require(json["next"] as? Int)
        }
        return ids
    }

    @Test func stalledStreamReadersKeepRelayMemoryBoundedAndCatchUpAfterReconnecting() throws {
        let (dir, _, harness) = try RelayHarness.single("status-stall")
        defer { harness.shutdown(); dir.remove() }
        // A journal large enough that nothing is dropped while the load runs.
        let port = try harness.serveFlux("edge", yaml: "journalMaxBytes: 536870912\n")
        // glibc hands freed memory back at once (instead of AllocatorTuning's 32 MiB cache per
        // arena), so RSS follows what the relay holds.
        try harness.startRelay(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=2"])
        try harness.startAgent("edge")
        try harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        #expect(try Self.post(port: port, count: 20) == ["202": 20])
        try harness.waitUntil("warm-up events at the relay") { try Self.stored(harness) == 20 }
        let relay = try #require(harness.relay.flatMap(ProcessMemory.serverPID(of:)))
        let baseline = try #require(ProcessMemory.residentMiB(relay))

        // Three readers that read nothing, then ~40 MB of status through the relay (events of
        // ~32 KB once cut to the entry caps: 16 KiB of message, 16 KiB of metadata). Held for
        // the stalled readers, 2000 such events cost +210 MiB before the per-reader bound; with
        // it the peak stays within +60 MiB on a quiet machine and +120 MiB on a loaded one.
        let count = 2000, expected = 20 + count
        let ready = dir.appending("readers-ready"), release = dir.appending("readers-release")
        let readersLog = dir.appending("readers.json")
        let readers = try BackgroundProcess(name: "stalled-readers", executable: findExecutable("python3") ?? "/usr/bin/python3", arguments: [
            Self.clients, "stall", "--port", "\(harness.httpPort)", "--token", harness.readerToken, "--readers", "3",
            "--ready", ready.path, "--release", release.path, "--expect", "\(expected)", "--quiet", "5",
        ], logFile: readersLog)
        defer { readers.stop() }
        try harness.waitUntil("readers connected") { FileManager.default.fileExists(atPath: ready.path) }
        let ((statuses, arrived), peak) = try ProcessMemory.peakMiB(relay) {
            let statuses = try Self.post(port: port, count: count, messageBytes: 16_000, metadataKeys: 10, metadataBytes: 4_000,
                                         connections: 2)
            let arrived = try? harness.waitUntil("every event at the relay", timeout: 90) { try Self.stored(harness) >= expected }
            return (statuses, arrived != nil)
        }
        #expect(statuses == ["202": count])
        #expect(arrived, "every event reached the relay")
        #expect(peak < baseline + 150, "relay RSS \(baseline) MiB before, \(peak) MiB peak with 3 stalled readers")

        // The readers read again: each was cut off; the first catches up from Last-Event-ID.
        _ = FileManager.default.createFile(atPath: release.path, contents: nil)
        try harness.waitUntil("readers finished", timeout: 120) { !readers.isRunning }
        let results = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: readersLog)) as? [[String: Any]])
        #expect(results.count == 3 && results.compactMap { $0["resumed"] as? [Int] }.count == 1)
        for result in results {
            #expect(result["error"] is NSNull, "\(result["error"] ?? "")")
            #expect(result["ended"] as? Bool == true, "a reader that fell behind is cut off")
            guard let resumed = result["resumed"] as? [Int] else { continue }
            // Every stored entry once, in order: as many ids as entries, each above the last.
            let seen = (result["first"] as? [Int] ?? []) + resumed
            #expect(seen.count == expected && zip(seen, seen.dropFirst()).allSatisfy { $0 < $1 },
                    "\(seen.count) ids of \(expected) entries, in order: \(zip(seen, seen.dropFirst()).allSatisfy { $0 < $1 })")
        }
        #expect(try Self.stored(harness) == expected)
        let after = try #require(ProcessMemory.residentMiB(relay))
        #expect(after < baseline + 50, "relay RSS \(after) MiB after the readers left (\(baseline) MiB before)")
    }

    /// Every stored event for `agent`, oldest first, from the timeline.
    static func events(_ harness: RelayHarness, agent: String) throws -> [[String: Any]] {
        let page = try #require(try harness.api("timeline?agent=\(agent)&limit=1000") as? [String: Any])
        return (page["entries"] as? [[String: Any]] ?? []).compactMap { $0["event"] as? [String: Any] }
    }

    @Test func oversizedEventsAreRefusedLongFieldsAreCutVisiblyAndABacklogOfBigEventsStillGoesUp() throws {
        let (dir, _, harness) = try RelayHarness.single("status-caps")
        defer { harness.shutdown(); dir.remove() }
        let port = try harness.serveFlux("edge", yaml: "journalMaxBytes: 536870912\n")
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }

        // A body over 256 KiB is refused, with a reason.
        let big = try HTTPProbe.request("http://127.0.0.1:\(port)/flux/events", method: "POST", headers: ["Content-Type: application/json"],
                                        body: Data(("{\"message\":\"" + String(repeating: "x", count: 300_000) + "\"}").utf8))
        #expect(big.status == 413)
        #expect(big.text.contains("262144"), "\(big.text)")

        // Under the body cap, but message and metadata over the entry caps: stored cut, saying so.
        #expect(try Self.post(port: port, count: 1, messageBytes: 40_000, metadataKeys: 50, metadataBytes: 3_000) == ["202": 1])
        try harness.waitUntil("the event at the relay") { try Self.stored(harness) == 1 }
        let event = try #require(try Self.events(harness, agent: "edge").first)
        let message = try #require(event["message"] as? String)
        #expect(message.utf8.count <= 16 << 10 && message.hasPrefix("event 0 mmm"))
        #expect(message.hasSuffix(" bytes]") && message.contains("… [cut "), "\(message.suffix(40))")
        let metadata = try #require(event["metadata"] as? [String: String])
        #expect(metadata["revision"] == "main@sha1:" + String(repeating: "0", count: 40))
        #expect(metadata.count <= 33 && metadata.values.allSatisfy { $0.utf8.count <= 2048 })
        #expect(metadata["relay.truncated"]?.hasPrefix("cut ") == true, "\(metadata["relay.truncated"] ?? "no note")")
        #expect(metadata.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } <= 17 << 10)

        // 200 such events journaled while the relay is away go up once it is back: no batch
        // is larger than the tunnel's message limit.
        harness.stopRelay()
        #expect(try Self.post(port: port, count: 200, messageBytes: 40_000, metadataKeys: 50, metadataBytes: 3_000,
                              connections: 4) == ["202": 200])
        try harness.startRelay()
        try harness.waitUntil("the backlog at the relay", timeout: 30) { try Self.allIDs(harness).count == 201 }
    }

    @Test func theRelayCutsWhatAnOldOrHostileAgentSends() throws {
        let dir = try TemporaryDirectory(prefix: "status-hostile")
        let repo = try TestRepo.create(at: dir.appending("podinfo"))
        try repo.write("app.yaml", "a: 1\n")
        _ = try repo.commit("initial")
        // Heartbeats far apart: the Python client answers them from a thread that a busy machine may hold up.
        let harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: [.init(name: "py", token: "python-token", sources: ["podinfo"])], dir: dir, heartbeat: "5s")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        let client = try InteropClient(harness: harness)
        let outcome = try client.run(token: "python-token", ["--status-event-bytes", "1000000"], timeout: 30)
        #expect(outcome.status == 0, "\(outcome.json) \(outcome.stderr)")
        #expect(outcome.json["status_acked"] as? Int == 1)
        let event = try #require(try Self.events(harness, agent: "py").first)
        let message = try #require(event["message"] as? String)
        #expect(message.utf8.count <= 16 << 10 && message.hasSuffix(" bytes]"), "\(message.utf8.count) bytes")
        let metadata = try #require(event["metadata"] as? [String: String])
        #expect(metadata.count <= 33, "\(metadata.count) metadata entries")
        #expect(metadata["relay.truncated"]?.hasPrefix("cut ") == true)
        #expect(metadata.values.allSatisfy { $0.utf8.count <= 2048 })
    }

    @Test func retentionDeletesOldEntriesByCountAndAgeAndKeepsTheLatestObjectState() throws {
        let setup = try StatusFeedTests.Setup("status-retention") { _, harness in
            harness.relayExtraYAML = "status: {retention: {maxEntries: 10, interval: 1s}}\n"
        }
        defer { setup.shutdown() }
        let harness = setup.harness
        try harness.waitUntil("Kustomization at the relay") { try setup.kustomizationState() == "progressing" }
        let port = try #require(harness.fluxPorts["edge"])
        #expect(try Self.post(port: port, count: 30) == ["202": 30])
        try harness.waitUntil("events at the relay") { try Self.stored(harness) >= 32 }

        // Only the newest 10 entries stay; the objects' latest state stays whole.
        try harness.waitUntil("old entries deleted") { try Self.allIDs(harness).count == 10 }
        let ids = try Self.allIDs(harness)
        let newest = try #require(try harness.api("timeline?since=\(ids[8])") as? [String: Any])
        #expect((newest["entries"] as? [[String: Any]])?.count == 1, "the newest entry is kept")
        #expect(try setup.kustomizationState() == "progressing")
        #expect(try harness.relayMetrics()["relay_status_entries_deleted_total"] ?? 0 >= 22)
        // The stream serves what is kept, and new entries as before.
        let stream = try HTTPProbe.request("\(setup.base)/api/v1/stream", headers: ["Authorization: Bearer \(setup.token)"], maxTime: 2)
        #expect(stream.text.split(separator: "\n").filter { $0.hasPrefix("id: ") }.compactMap { Int($0.dropFirst(4)) } == ids)
        try setup.api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", namespace: "flux-system",
                                name: "podinfo", status: KubeStandIn.readyStatus(revision: "main@sha1:\(setup.commit)"))
        try harness.waitUntil("ready at the relay") { try setup.kustomizationState() == "ready" }

        // By age, and applied at start: after a restart with maxAge 1s nothing older is left.
        harness.stopRelay()
        harness.relayExtraYAML = "status:\n  retention: {maxAge: 1s, interval: 1h}\n"
        Thread.sleep(forTimeInterval: 1.2)
        try harness.startRelay()
        try harness.waitUntil("aged entries deleted at start") { try Self.allIDs(harness).allSatisfy { $0 > ids.last! + 1 } }
        #expect(try setup.kustomizationState() == "ready")
    }

    /// `status.retention` is checked at start-up; errors name the field.
    @Test func retentionSettingsAreCheckedAndErrorsNameTheField() throws {
        let check = try ConfigCheck()
        defer { check.dir.remove() }
        for (yaml, field, message) in [
            ("{maxEntries: 0}", "status.retention.maxEntries", "must be at least 1"),
            ("{maxAge: 500ms}", "status.retention.maxAge", "must be at least 1s"),
            ("{interval: 2d}", "status.retention.interval", "must be 1s…24h"),
            ("{maxAgee: 30d}", "status.retention.maxAgee", "maxAge"),
        ] {
            let mistake = ConfigMistake("dataDir: relay-data", "dataDir: relay-data\nstatus: {retention: \(yaml)}", field, message)
            mistake.check(try check.relay(mistake.replace))
        }
        let valid = "dataDir: relay-data\nstatus:\n  retention: {maxAge: 30d, maxEntries: 1000000, interval: 10m}"
        #expect(try check.relay(["dataDir: relay-data": valid]).status == 0)
    }

    /// `count` event entries of ~30 KB stored straight into the relay's database.
    static func seed(_ registry: Registry, agent: String, count: Int) async throws {
        let metadata = Dictionary(uniqueKeysWithValues: (0..<7).map { ("k\($0)", String(repeating: "v", count: 2_000)) })
        for first in stride(from: 1, through: count, by: 100) {
            let entries = (first..<min(first + 100, count + 1)).map { sequence in
                Relay_V1_StatusEntry.with {
                    $0.sequence = UInt64(sequence)
                    $0.observedUnixMs = Int64(Date().timeIntervalSince1970 * 1000)
                    $0.event = .with {
                        $0.kind = "Kustomization"
                        $0.namespace = "flux-system"
                        $0.name = "app"
                        $0.message = "entry \(sequence) " + String(repeating: "m", count: 15_000)
                        $0.metadata = metadata
                    }
                }
            }
            _ = try await registry.storeStatus(agent: agent, journal: "seeded", entries: entries)
        }
    }

    @Test func timelineAndRevisionListsAreCappedAndPagedAndBigRequestsStayLight() async throws {
        let (dir, _, harness) = try RelayHarness.single("status-timeline")
        defer { harness.shutdown(); dir.remove() }
        let registry = try Registry(path: dir.appending("relay-data/relay.sqlite"))
        try await Self.seed(registry, agent: "edge", count: 3000)
        for index in 0..<300 {
            try await registry.record(PackagedArtifact(
                source: "podinfo", revision: "main@sha1:\(index)", digest: "sha256:" + String(format: "%064x", index), size: 1,
                commit: "\(index)", origin: "seeded", createdAt: Date(timeIntervalSince1970: 1_700_000_000 + Double(index))))
        }
        try harness.startRelay(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=2"])
        try harness.waitUntilPackaged("podinfo")
        let relay = try #require(harness.relay.flatMap(ProcessMemory.serverPID(of:)))

        // A large limit is capped; the default is 100; bad limits are refused.
        let capped = try #require(try harness.api("timeline?limit=10000") as? [String: Any])
        let page = try #require(capped["entries"] as? [[String: Any]])
        #expect(page.count == 1000)
        #expect(capped["next"] as? Int == page.last?["id"] as? Int)
        #expect(capped["more"] as? Bool == true)
        let first = try #require(try harness.api("timeline") as? [String: Any])
        #expect((first["entries"] as? [Any])?.count == 100)
        for bad in ["0", "-5", "many"] {
            let answer = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/timeline?limit=\(bad)",
                                               headers: ["Authorization: Bearer \(harness.readerToken)"])
            #expect(answer.status == 400, "limit=\(bad)")
        }
        // Paging returns every entry exactly once, in order.
        let ids = try Self.allIDs(harness)
        #expect(ids.count == 3000 && ids == ids.sorted() && Set(ids).count == 3000)

        // Four parallel requests for as much as they may get: the relay's memory stays bounded.
        let baseline = try #require(ProcessMemory.residentMiB(relay))
        let (sizes, peak) = ProcessMemory.peakMiB(relay) {
            let sizes = Mutex<[Int]>([])
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                let answer = try? HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/timeline?limit=10000",
                                                    headers: ["Authorization: Bearer \(harness.readerToken)"], maxTime: 60)
                sizes.withLock { $0.append(answer?.body.count ?? 0) }
            }
            return sizes.withLock { $0 }
        }
        #expect(sizes.count == 4 && sizes.allSatisfy { $0 > 1_000_000 })
        #expect(peak < baseline + 150, "relay RSS \(baseline) MiB before, \(peak) MiB peak with 4 big timeline requests")

        // Revisions: newest first, 100 a page, a Link to the next page, every revision once.
        var revisions: [String] = []
        var next: String? = "sources/podinfo/revisions"
        var pages = 0
        while let path = next, pages < 10 {
            let answer = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/\(path)",
                                               headers: ["Authorization: Bearer \(harness.readerToken)"])
            let list = try #require(try JSONSerialization.jsonObject(with: answer.body) as? [[String: Any]])
            #expect(list.count <= 100)
            revisions += list.compactMap { $0["revision"] as? String }
            next = answer.headers["link"].flatMap { link in
                link.range(of: "/api/v1/").flatMap { start in link[start.upperBound...].split(separator: ">").first.map(String.init) }
            }
            pages += 1
        }
        #expect(pages == 4)
        #expect(revisions.count == 301 && Set(revisions).count == 301)
        #expect(revisions.last == "main@sha1:0")
    }
}
