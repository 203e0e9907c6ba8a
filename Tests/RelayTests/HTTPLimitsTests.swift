import Foundation
import Testing

/// Bounded resources on the HTTP ports (relay `http:`, agent `listen:`): a connection cap per
/// listener, a header-read timeout, an idle keep-alive timeout, and a raised descriptor limit,
/// against real processes flooded with idle and slow clients on loopback.
@Suite struct HTTPLimitsTests {
    /// Idle TCP connections held against a port; `topUp` replaces the ones the server closed.
    final class IdleFlood {
        let port: Int
        let size: Int
        private(set) var connections: [RawConnection] = []
        /// Connections the server closed (and we then dropped), over the flood's life.
        private(set) var closedByServer = 0

        init(port: Int, size: Int) {
            self.port = port
            self.size = size
        }

        /// Drops connections the server closed, then opens new ones up to `size`.
        func topUp() throws {
            reap()
            while connections.count < size { connections.append(try RawConnection(port: port)) }
        }

        /// Drops (and counts) the connections the server has closed.
        @discardableResult
        func reap() -> Int {
            let before = connections.count
            connections.removeAll { $0.receive(timeout: 0) == .closed }
            closedByServer += before - connections.count
            return before - connections.count
        }

        /// Waits until the server has closed every connection; false if some are still open after `timeout`.
        func allClosed(within timeout: Double) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                reap()
                if connections.isEmpty { return true }
                Thread.sleep(forTimeInterval: 0.05)
            }
            return false
        }

        func close() { connections.removeAll() }

        /// Opens the whole flood; how many connections the server closed within 0.3 s.
        func start() throws -> Int {
            try topUp()
            Thread.sleep(forTimeInterval: 0.3)
            return reap()
        }

        /// Once the flood stops: whether the server closed every connection within `timeout`,
        /// and the server's readings once the flood's sockets are closed on this side too.
        func end(_ pid: Int32, closedWithin timeout: Double) -> (allClosed: Bool, after: ProcessReadings) {
            let closed = allClosed(within: timeout)
            close()
            Thread.sleep(forTimeInterval: 0.3)
            return (closed, ProcessReadings.read(pid))
        }
    }

    static func metrics(_ port: Int) throws -> [String: Double] {
        try MetricsAndLogsTests.scrape("http://127.0.0.1:\(port)/metrics")
    }

    /// 3× the cap of idle connections: beyond the cap the oldest idle ones are closed at once,
    /// the relay's descriptors stay bounded, `/healthz` still answers on a fresh connection, a
    /// real agent connects through the tunnel and a webhook push reaches it; the header
    /// timeout then closes the rest and the descriptors return to the baseline.
    @Test func idleFloodIsCappedAndTimedOutWhileTheTunnelKeepsDelivering() throws {
        let (dir, repo, harness) = try RelayHarness.single("http-flood")
        defer { harness.shutdown(); dir.remove() }
        let cap = 40
        harness.relayExtraYAML = "httpLimits: {maxConnections: \(cap), headerTimeout: 1500ms, idleTimeout: 5s}\n"
        harness.relaySoftFileLimit = 4096  // the relay raises it to the hard limit
        try harness.startRelay()
        let relay = try #require(harness.relay)
        let pid = try #require(ProcessReadings.serverPID(of: relay))
        let limits = try #require(ProcessReadings.openFileLimits(pid))
        #expect(limits.soft == limits.hard, "RLIMIT_NOFILE soft limit raised to the hard limit")
        try harness.waitUntil("source packaged") {
            try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/readyz").status == 200
        }
        let before = ProcessReadings.read(pid)

        let flood = IdleFlood(port: harness.httpPort, size: 3 * cap)
        defer { flood.close() }
        let shed = try flood.start()
        #expect(shed >= 2 * cap - 2, "connections beyond the cap are closed at once (\(shed) of \(3 * cap))")
        var peak = ProcessReadings.read(pid)

        // While the flood goes on: probes, the tunnel, packaging and delivery still work.
        try flood.topUp()
        #expect(try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/healthz", maxTime: 5).status == 200)
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact at an agent that connected during the flood") {
            try flood.topUp()
            let now = ProcessReadings.read(pid)
            if now.descriptors > peak.descriptors { peak = now }
            return try !harness.published("edge").isEmpty
        }
        try repo.write("app.yaml", "a: 2\n")
        let second = try repo.commit("second")
        try flood.topUp()
        #expect(try harness.pushWebhook(source: harness.sources[0]).stdout.hasSuffix("202"))
        try harness.waitUntil("the pushed revision at the agent") {
            try flood.topUp()
            let now = ProcessReadings.read(pid)
            if now.descriptors > peak.descriptors { peak = now }
            return try harness.published("edge").contains { $0.revision == "main@sha1:\(second)" }
        }
        // Beyond the cap: the agent's tunnel, packaging, and the registry's reader pool, whose
        // connections (up to 5, a few descriptors each) open lazily as readers overlap (the API,
        // the tunnel, the feed follower's poll): a fixed allowance, not one per flood connection.
        #expect(peak.descriptors <= before.descriptors + cap + 32, "descriptors bounded by the cap: \(before) → \(peak)")

        // The flood stops: the header timeout closes every idle connection.
        let (allClosed, after) = flood.end(pid, closedWithin: 3)
        #expect(allClosed, "idle connections still open after the header timeout")
        print("relay under an idle flood (cap \(cap)): before \(before); peak \(peak); after \(after); closed by the relay \(flood.closedByServer)")
        #expect(after.descriptors <= before.descriptors + 8, "descriptors back near the baseline: \(before) → \(after)")
        #expect(after.rssKiB - before.rssKiB < 64 << 10, "RSS \(before) → \(after)")
        let samples = try Self.metrics(harness.httpPort)
        #expect((samples["relay_http_connections_evicted_total"] ?? 0) >= Double(2 * cap - 2))
        #expect((samples["relay_http_header_timeouts_total"] ?? 0) >= 1)
    }

    /// A client trickling its headers is cut at the header timeout; a kept-alive connection
    /// lives until the idle timeout; long-lived SSE streams are not cut by either; with every
    /// slot busy, a new connection gets an immediate 503 with Retry-After.
    @Test func slowHeadersAreCutStreamsAreNotAndAFullListenerAnswers503() throws {
        let (dir, _, harness) = try RelayHarness.single("http-slow")
        defer { harness.shutdown(); dir.remove() }
        let cap = 6
        harness.relayExtraYAML = "httpLimits: {maxConnections: \(cap), headerTimeout: 1s, idleTimeout: 2500ms}\n"
        try harness.startRelay()
        let port = harness.httpPort

        // Slowloris: one header line every 200 ms, for up to 5 s.
        let slow = try RawConnection(port: port)
        let started = Date()
        slow.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        var cut = false
        for index in 0..<25 {
            if slow.closesWithin(0.2) { cut = true; break }
            slow.send("X-Slow-\(index): trickle\r\n")
        }
        let cutAfter = Date().timeIntervalSince(started)
        #expect(cut && cutAfter < 2.5, "a slow header writer is cut at the header timeout (cut \(cut) after \(cutAfter) s)")

        // Keep-alive: a finished request does not start the header clock; the idle timeout applies.
        let kept = try RawConnection(port: port)
        #expect(kept.exchange("GET", "/healthz")?.status == 200)
        #expect(!kept.closesWithin(1.5), "closed before the idle timeout")
        #expect(kept.closesWithin(2.5), "an idle kept-alive connection is closed at the idle timeout")

        // SSE streams fill every slot and outlive both timeouts.
        var streams: [RawConnection] = []
        for _ in 0..<cap {
            let stream = try RawConnection(port: port)
            stream.send("GET /api/v1/stream?access_token=\(harness.readerToken) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            guard case .data(let first) = stream.receive(timeout: 5) else { Issue.record("no stream"); return }
            #expect(String(decoding: first, as: UTF8.self).contains("text/event-stream"))
            streams.append(stream)
        }
        let refusedAt = Date()
        let extra = try RawConnection(port: port)
        let refusal = extra.readResponse(timeout: 2)
        #expect(refusal?.status == 503, "a connection beyond a full cap is refused")
        #expect(refusal?.headers["retry-after"] != nil)
        #expect(Date().timeIntervalSince(refusedAt) < 1)
        #expect(extra.closesWithin(1))
        Thread.sleep(forTimeInterval: 3)
        for stream in streams { #expect(stream.receive(timeout: 0.05) != .closed, "an SSE stream was cut") }
        // Readers that go away free their slots at once (not at the stream's next write).
        streams.removeAll()
        try harness.waitUntil("slots freed", timeout: 2) { RawConnection.get(port: port, "/healthz")?.status == 200 }
        let samples = try Self.metrics(port)
        #expect((samples["relay_http_connections_refused_total"] ?? 0) >= 1)
        #expect((samples["relay_http_header_timeouts_total"] ?? 0) >= 1)
    }

    /// The agent's Flux endpoint has the same limits (its own, smaller default cap).
    @Test func agentFluxEndpointIsCappedAndClosesIdleConnections() throws {
        let (dir, _, harness) = try RelayHarness.single("agent-flood")
        defer { harness.shutdown(); dir.remove() }
        let cap = 20
        let port = try harness.serveFlux("edge", yaml: "httpLimits: {maxConnections: \(cap), headerTimeout: 1s}\n")
        try harness.startRelay()
        let agent = try harness.startAgent("edge")
        try harness.waitUntil("flux endpoint ready") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        let pid = try #require(ProcessReadings.serverPID(of: agent))
        let before = ProcessReadings.read(pid)

        let flood = IdleFlood(port: port, size: 3 * cap)
        defer { flood.close() }
        #expect(try flood.start() >= 2 * cap - 2, "connections beyond the cap are closed at once")
        let during = ProcessReadings.read(pid)
        try flood.topUp()
        #expect(try HTTPProbe.request("http://127.0.0.1:\(port)/healthz", maxTime: 5).status == 200)
        #expect(during.descriptors <= before.descriptors + cap + 8, "descriptors bounded: \(before) → \(during)")
        let (allClosed, after) = flood.end(pid, closedWithin: 2.5)
        #expect(allClosed, "idle connections closed at the header timeout")
        print("agent under an idle flood (cap \(cap)): before \(before); during \(during); after \(after)")
        #expect(after.descriptors <= before.descriptors + 4)
        let samples = try Self.metrics(port)
        #expect((samples["relay_agent_http_connections_evicted_total"] ?? 0) >= Double(2 * cap - 2))
    }

    /// `httpLimits:` is checked at start-up; errors name the field.
    @Test func outOfRangeLimitsNameTheField() throws {
        let check = try ConfigCheck()
        defer { check.dir.remove() }
        let relay = ConfigMistake("dataDir: relay-data", "dataDir: relay-data\nhttpLimits: {maxConnections: 0}",
                                  "httpLimits.maxConnections", "must be 1…1000000")
        relay.check(try check.relay(relay.replace))
        let agent = ConfigMistake("dataDir: agent-data", "dataDir: agent-data\nhttpLimits: {headerTimeout: 1h}",
                                  "httpLimits.headerTimeout", "must be 100ms…10m")
        agent.check(try check.agent(agent.replace, command: "check-config"))
        #expect(try check.relay(["dataDir: relay-data": "dataDir: relay-data\nhttpLimits: {maxConnections: 10, idleTimeout: 5s}"]).status == 0)
    }
}
