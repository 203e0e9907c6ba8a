import Foundation
@testable import RelayServer
import Testing

/// Flux events reach the relay complete, in order, once: through relay outages and a
/// kill -9 of the agent (real processes; the events are POSTed as notification-controller's
/// generic-hmac provider sends them).
@Suite struct StatusUplinkTests {
    static func postEvent(port: Int, key: String, message: String) throws -> Int {
        let body = Data("""
            {"involvedObject":{"kind":"Kustomization","namespace":"flux-system","name":"podinfo","uid":"u1",\
            "apiVersion":"kustomize.toolkit.fluxcd.io/v1","resourceVersion":"1"},"severity":"info",\
            "timestamp":"2026-11-21T10:00:00Z","message":"\(message)","reason":"ReconciliationSucceeded",\
            "metadata":{"revision":"main@sha1:0123456789abcdef0123456789abcdef01234567"},\
            "reportingController":"kustomize-controller","reportingInstance":"kustomize-controller-1"}
            """.utf8)
        let signature = "sha256=" + HMACHex.sha256(key: key, body)
        return try HTTPProbe.request("http://127.0.0.1:\(port)/flux/events", method: "POST",
                                     headers: ["Content-Type: application/json", "X-Signature: \(signature)"], body: body).status
    }

    @Test func eventsMadeWhileTheRelayIsAwayArriveOnceInOrderAfterAKillAndRestart() async throws {
        let (dir, _, harness) = try RelayHarness.single("uplink")
        defer { harness.shutdown(); dir.remove() }
        try Data("event-key\n".utf8).write(to: dir.appending("events.key"))
        let port = try harness.serveFlux("edge", yaml: "flux: {events: {hmacTokenFile: \(dir.appending("events.key").path)}}\n")
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        let registry = try Registry(path: dir.appending("relay-data/relay.sqlite"))
        func stored() async throws -> [StatusRecord] { try await registry.timeline(.init(agent: "edge", limit: 10_000)) }

        var sent: [String] = []
        func post(_ count: Int) throws {
            for _ in 0..<count {
                let message = "event \(sent.count + 1)"
                #expect(try Self.postEvent(port: port, key: "event-key", message: message) == 202)
                sent.append(message)
            }
        }
        // Connected: events arrive at once.
        try post(5)
        try await harness.waitUntil("first events at the relay") { try await stored().count == 5 }
        // A wrong signature is refused and journals nothing.
        #expect(try Self.postEvent(port: port, key: "wrong", message: "forged") == 401)

        // The relay goes away; events keep coming; the agent is killed and restarted.
        harness.stopRelay()
        try post(40)
        harness.killAgent("edge")
        try harness.startAgent("edge")
        try harness.waitUntil("agent endpoint after restart") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        try post(40)
        harness.stopAgent("edge")   // and once more, gracefully
        try harness.startAgent("edge")
        try harness.waitUntil("agent endpoint after the second restart") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        try post(15)
        try harness.startRelay()
        try await harness.waitUntil("every event at the relay", timeout: 30) { try await stored().count >= sent.count }
        let records = try await stored()
        // Complete, gap-free, duplicate-free, in order.
        #expect(records.count == sent.count)
        #expect(records.map(\.type).allSatisfy { $0 == "event" })
        #expect(Set(records.map(\.journal)).count == 1)
        #expect(records.map(\.sequence) == (1...UInt64(sent.count)).map { $0 })
        #expect(records.map { $0.event?.message ?? "" } == sent)
        #expect(records.first?.event?.revision == "main@sha1:0123456789abcdef0123456789abcdef01234567")
        // The agent keeps nothing the relay acknowledged.
        try harness.waitUntil("journal trimmed") {
            let names = try FileManager.default.contentsOfDirectory(atPath: dir.appending("agent-edge/journal").path)
            return !names.contains { $0.hasPrefix("seg-") }
        }
    }
}

enum HMACHex {
    static func sha256(key: String, _ data: Data) -> String {
        var hmac = CryptoKitHMAC(key: Data(key.utf8))
        hmac.update(data)
        return hmac.hex
    }
}
