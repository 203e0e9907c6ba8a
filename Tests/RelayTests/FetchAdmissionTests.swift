import Foundation
import GRPCCore
import Synchronization
import Testing
@testable import RelayServer
@testable import RelayShared

/// The relay-wide bound on Fetch streams (`limits.maxFetchStreams`, `limits.maxQueuedFetches`):
/// the admission gate itself, then real processes refused and coming back after the hint.
@Suite struct FetchAdmissionTests {
    /// Polls (bounded) until `condition` holds.
    static func eventually(_ what: String, seconds: Double = 10, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while !condition() {
            guard ContinuousClock.now < deadline else { throw HarnessError.timedOut(what, relayLog: "", agentLogs: []) }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    static func pushback(_ error: any Error) -> Int? {
        guard let error = error as? RPCError, error.code == .resourceExhausted else { return nil }
        return error.metadata[stringValues: "grpc-retry-pushback-ms"].first(where: { _ in true }).flatMap { Int($0) }
    }

    @Test func admitsUpToTheStreamLimitQueuesFIFOAcrossAgentsAndRefusesBeyondTheQueueWithAPushback() async throws {
        let gate = FetchLimiter()
        let limits = FetchLimiter.Limits(perAgent: 4, streams: 2, queued: 3)
        try await gate.admit("a", limits: limits)
        try await gate.admit("b", limits: limits)
        #expect(gate.streaming == 2)

        let order = Recorder()
        var waiters: [Task<Void, any Error>] = []
        for (index, agent) in ["c", "a", "d"].enumerated() {
            waiters.append(Task {
                try await gate.admit(agent, limits: limits)
                order.append(agent)
            })
            try await Self.eventually("waiter \(agent) queued") { gate.queued == index + 1 }
        }
        #expect(gate.streaming == 2, "nothing beyond maxFetchStreams streams")

        // The queue is full: refused at once, with a retry hint in the documented range.
        let refusal = gate.refusal("e", limits: limits)
        let hint = try #require(refusal.flatMap { Self.pushback($0) })
        #expect((1000...60_000).contains(hint))
        await #expect(throws: RPCError.self) { try await gate.admit("e", limits: limits) }
        #expect(gate.queued == 3)

        // Each release admits the longest waiter, whatever its agent.
        gate.release("a", limits: limits)
        try await Self.eventually("first waiter admitted") { order.items.count == 1 }
        gate.release("b", limits: limits)
        try await Self.eventually("second waiter admitted") { order.items.count == 2 }
        #expect(order.items == ["c", "a"])
        #expect(gate.streaming == 2 && gate.queued == 1)
        gate.release("c", limits: limits)
        for waiter in waiters { try await waiter.value }
        #expect(order.items == ["c", "a", "d"])
        gate.release("a", limits: limits)
        gate.release("d", limits: limits)
        #expect(gate.streaming == 0 && gate.queued == 0)
        #expect(gate.inUse("a") == 0 && gate.inUse("d") == 0)
    }

    @Test func anAgentsOwnLimitCountsItsWaitersAndIsRefusedWithAHint() async throws {
        let gate = FetchLimiter()
        let limits = FetchLimiter.Limits(perAgent: 2, streams: 1, queued: 10)
        try await gate.admit("a", limits: limits)
        let waiter = Task { try await gate.admit("a", limits: limits) }
        try await Self.eventually("waiter queued") { gate.queued == 1 }
        #expect(gate.inUse("a") == 2)
        let refusal = try #require(gate.refusal("a", limits: limits))
        #expect(refusal.message.contains("limits.maxConcurrentFetches"))
        #expect(Self.pushback(refusal) != nil)
        #expect(gate.refusal("b", limits: limits) == nil, "another agent may still queue")
        gate.release("a", limits: limits)
        try await waiter.value
        gate.release("a", limits: limits)
        #expect(gate.inUse("a") == 0 && gate.streaming == 0)
    }

    @Test func aCancelledWaiterGivesUpItsPlaceAndNoSlotLeaks() async throws {
        let gate = FetchLimiter()
        let limits = FetchLimiter.Limits(perAgent: 4, streams: 1, queued: 1)
        try await gate.admit("a", limits: limits)
        let cancelled = Task { try await gate.admit("b", limits: limits) }
        try await Self.eventually("waiter queued") { gate.queued == 1 }
        #expect(gate.refusal("c", limits: limits) != nil, "the queue is full")
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(gate.queued == 0 && gate.inUse("b") == 0)

        // Its place is free again, and the slot goes to the next waiter, not to a ghost.
        let next = Task { try await gate.admit("c", limits: limits) }
        try await Self.eventually("next waiter queued") { gate.queued == 1 }
        gate.release("a", limits: limits)
        try await next.value
        #expect(gate.streaming == 1)
        gate.release("c", limits: limits)
        #expect(gate.streaming == 0 && gate.queued == 0)

        // Cancelled before it asks: refused with CancellationError, holding nothing.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await gate.admit("d", limits: limits)
        }
        try await gate.admit("a", limits: limits)
        _ = await early.result
        gate.release("a", limits: limits)
        #expect(gate.streaming == 0 && gate.queued == 0 && gate.inUse("d") == 0)
    }

    @Test func theHintGrowsWithTheQueueOverTheCompletionRateWithinItsBounds() {
        let now = ContinuousClock.now
        // Ten completions over 9 s: one a second.
        let completions = (0..<10).map { now - .seconds(9 - $0) }
        #expect(FetchLimiter.estimatedWait(waiting: 4, completions: completions, streams: 8) == 5000)
        #expect(FetchLimiter.estimatedWait(waiting: 0, completions: completions, streams: 8) == 1000)
        #expect(FetchLimiter.estimatedWait(waiting: 10_000, completions: completions, streams: 8) == 48_000)
        // Without history: one second per stream.
        #expect(FetchLimiter.estimatedWait(waiting: 63, completions: [], streams: 16) == 4000)
    }

    @Test func configDefaultsAndValidationNameTheField() throws {
        #expect(TunnelLimits().maxFetchStreams == 32)
        #expect(TunnelLimits().maxQueuedFetches == 1024)
        try ConfigCheck.relay(ConfigMistake("  maxChunkBytes: 65536", "  maxChunkBytes: 65536\n  maxFetchStreams: 0", "limits.maxFetchStreams: must be 1…4096"))
        try ConfigCheck.relay(ConfigMistake("  maxChunkBytes: 65536", "  maxChunkBytes: 65536\n  maxQueuedFetches: -1", "limits.maxQueuedFetches: must be 0…1000000"))
        try ConfigCheck.with { check in
            let valid = try check.relay(["  maxChunkBytes: 65536": "  maxChunkBytes: 65536\n  maxFetchStreams: 8\n  maxQueuedFetches: 0"])
            #expect(valid.status == 0, "\(valid.stderr)")
        }
    }

    /// One stream relay-wide and no queue: two real agents both get a new artifact; one of
    /// them is refused with a hint and comes back after it.
    @Test func twoAgentsBehindOneStreamBothPublishAfterARefusal() throws {
        let dir = try TemporaryDirectory(prefix: "fetch-admission")
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("podinfo"))
        try repo.write("app.yaml", "a: 1\n")
        _ = try repo.commit("initial")
        let source = RelayHarness.Source(name: "podinfo", repo: repo, branch: "main")
        let harness = try RelayHarness(sources: [source], agents: [
            .init(name: "edge-1", token: "t-edge-1", sources: ["podinfo"]),
            .init(name: "edge-2", token: "t-edge-2", sources: ["podinfo"]),
        ], dir: dir)
        let relay = try AdmissionRelay(harness: harness, limits: "maxFetchStreams: 1, maxQueuedFetches: 0, maxChunkBytes: 4096")
        defer { harness.shutdown(); relay.stop() }
        let ports = try ["edge-1": harness.serveFlux("edge-1"), "edge-2": harness.serveFlux("edge-2")]
        try harness.startAgent("edge-1", relayPort: relay.tunnelPort)
        try harness.startAgent("edge-2", relayPort: relay.tunnelPort)
        try harness.waitUntil("first artifact at both agents", timeout: 60) {
            try !harness.published("edge-1").isEmpty && !harness.published("edge-2").isEmpty
        }

        // A new artifact of ~3 MB (incompressible) in 4 KiB chunks: both agents ask at once.
        // On a loaded machine one agent can hear of it only after the other has fetched it
        // all (then nothing is refused): up to three rounds, each a new artifact.
        var random = SystemRandomNumberGenerator()
        for round in 1...3 {
            try repo.write("blob.bin", Data((0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &random) }))
            let head = try repo.commit("big \(round)")
            let response = try runProcess("/usr/bin/env", ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST",
                                                           "-H", "X-Gitlab-Token: \(harness.webhookToken)",
                                                           "-H", "Content-Type: application/json", "--data",
                                                           #"{"object_kind":"push","ref":"refs/heads/main","project":{"git_http_url":"\#(repo.url.path)"}}"#,
                                                           "http://127.0.0.1:\(relay.httpPort)/hooks/gitlab"])
            #expect(response.stdout.hasSuffix("202"), "\(response.stdout)")
            for agent in ["edge-1", "edge-2"] {
                try harness.waitUntil("\(agent) publishes the new artifact", timeout: 120) {
                    try harness.published(agent).contains { $0.revision == "main@sha1:\(head)" }
                }
            }
            let refusals = try MetricsAndLogsTests.scrape("http://127.0.0.1:\(relay.httpPort)/metrics")["relay_fetch_refused_total"] ?? 0
            if refusals > 0 { break }
        }
        let relayMetrics = try MetricsAndLogsTests.scrape("http://127.0.0.1:\(relay.httpPort)/metrics")
        let deferred = try ports.values.map {
            try MetricsAndLogsTests.scrape("http://127.0.0.1:\($0)/metrics")["relay_agent_fetch_deferred_total"] ?? 0
        }.reduce(0, +)
        let refused = relayMetrics["relay_fetch_refused_total"] ?? 0
        #expect(refused > 0, "relay_fetch_refused_total")
        #expect(deferred > 0, "relay_agent_fetch_deferred_total")
        #expect(deferred <= refused)
        let failures = try ports.values.map {
            try MetricsAndLogsTests.scrape("http://127.0.0.1:\($0)/metrics")["relay_agent_fetch_failures_total"] ?? 0
        }.reduce(0, +)
        #expect(failures == 0, "a deferred fetch is not a failure")
        #expect((relayMetrics["relay_fetch_streams_active"] ?? 0) == 0)
        #expect((relayMetrics["relay_fetch_queue_depth"] ?? 0) == 0)
    }
}

/// Names in the order they were appended.
final class Recorder: Sendable {
    private let list = Mutex<[String]>([])
    func append(_ item: String) { list.withLock { $0.append(item) } }
    var items: [String] { list.withLock { $0 } }
}

/// A relay-server started with extra `limits:` fields (the harness's relay has fixed ones);
/// it uses the harness's certificates, sources and agents.
final class AdmissionRelay: @unchecked Sendable {
    let tunnelPort: Int
    let httpPort: Int
    let process: BackgroundProcess

    init(harness: RelayHarness, limits: String) throws {
        tunnelPort = try LoopbackPort.free()
        httpPort = try LoopbackPort.free()
        let dir = harness.dir
        var yaml = """
            listen: 127.0.0.1:\(tunnelPort)
            http: 127.0.0.1:\(httpPort)
            tls: {certFile: \(harness.certificates.serverCertificate.path), keyFile: \(harness.certificates.serverKey.path)}
            dataDir: \(dir.appending("relay-data").path)
            webhookToken: \(harness.webhookToken)
            limits: {heartbeatInterval: 500ms, \(limits)}
            sources:

            """
        for source in harness.sources {
            yaml += "  - {name: \(source.name), url: \(source.repo.url.path), ref: {branch: \(source.branch)}, interval: 1h}\n"
        }
        yaml += "agents:\n"
        for agent in harness.agents {
            yaml += "  - {name: \(agent.name), tokenSHA256: \(TokenHash.sha256Hex(agent.token)), sources: [\(agent.sources.joined(separator: ", "))]}\n"
        }
        let config = dir.appending("relay-admission.yaml")
        try Data(yaml.utf8).write(to: config)
        process = try BackgroundProcess(name: "relay-server", executable: Binaries.relayServer,
                                        arguments: ["serve", "--config", config.path],
                                        logFile: dir.appending("relay.log"), environment: testEnvironment())
        try LoopbackPort.waitUntilAccepting(tunnelPort, process: process, timeout: 20)
        try LoopbackPort.waitUntilAccepting(httpPort, process: process, timeout: 20)
    }

    func stop() { process.stop() }
}
