import Foundation
import Testing

/// `/metrics` on both processes, scraped as Prometheus would, and JSON logs on request.
@Suite struct MetricsAndLogsTests {
    /// Prometheus text format: `name{labels} value` → value, keyed by `name{labels}`.
    static func scrape(_ url: String) throws -> [String: Double] {
        let answer = try HTTPProbe.request(url)
        guard answer.status == 200 else { throw KubeStandInError.control("\(url): \(answer.status)") }
        #expect(answer.headers["content-type"]?.hasPrefix("text/plain") == true)
        var samples: [String: Double] = [:]
        for line in answer.text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    @Test func countersMoveAfterADeliveryAndLogsAreJSONWhenAsked() throws {
        let (dir, repo, harness) = try RelayHarness.single("metrics")
        defer { harness.shutdown(); dir.remove() }
        let port = try harness.serveFlux("edge")
        try harness.startRelay(environment: ["RELAY_LOG_FORMAT": "json"])
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact") { try !harness.published("edge").isEmpty }
        let relayURL = "http://127.0.0.1:\(harness.httpPort)/metrics"
        let agentURL = "http://127.0.0.1:\(port)/metrics"
        try harness.waitUntil("first delivery counted") { try Self.scrape(relayURL)["relay_deliveries_total"] == 1 }
        let relayBefore = try Self.scrape(relayURL)
        let agentBefore = try Self.scrape(agentURL)
        #expect(relayBefore["relay_agents_connected"] == 1)
        #expect(relayBefore["relay_artifacts_packaged_total{source=\"podinfo\"}"] == 1)
        #expect(agentBefore["relay_agent_connected"] == 1)
        #expect(agentBefore["relay_agent_artifacts_published_total"] == 1)

        // A push: packaged, fetched, published, acknowledged — every counter moves.
        try repo.write("app.yaml", "a: 2\n" + String(repeating: "x", count: 50_000))
        _ = try repo.commit("second")
        try harness.pushWebhook(source: harness.sources[0])
        try harness.waitUntil("second delivery counted") { try Self.scrape(relayURL)["relay_deliveries_total"] == 2 }
        let relayAfter = try Self.scrape(relayURL)
        let agentAfter = try Self.scrape(agentURL)
        #expect(relayAfter["relay_artifacts_packaged_total{source=\"podinfo\"}"] == 2)
        #expect((relayAfter["relay_fetch_bytes_sent_total"] ?? 0) > (relayBefore["relay_fetch_bytes_sent_total"] ?? 0))
        #expect(relayAfter["relay_fetches_total"] == 2)
        #expect(relayAfter["relay_delivery_latency_seconds_count"] == 2)
        #expect((relayAfter["relay_packaging_duration_seconds_count{source=\"podinfo\"}"] ?? 0) == 2)
        #expect(agentAfter["relay_agent_artifacts_published_total"] == 2)
        #expect((agentAfter["relay_agent_fetch_bytes_total"] ?? 0) > (agentBefore["relay_agent_fetch_bytes_total"] ?? 0))
        #expect(agentAfter["relay_agent_status_journal_backlog"] ?? 0 == 0)

        // RELAY_LOG_FORMAT=json: every relay log line is one JSON object.
        let lines = harness.relayLog.split(separator: "\n").filter { $0.hasPrefix("{") }
        #expect(lines.count >= 3)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["level"] is String && object?["message"] is String && object?["time"] is String, "\(line)")
        }
        #expect(lines.contains { $0.contains("\"message\":\"delivered\"") && $0.contains("\"agent\":\"edge\"") })
    }
}
