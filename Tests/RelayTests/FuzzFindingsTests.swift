import Foundation
@testable import RelayAgent
@testable import RelayShared
import Testing

/// Inputs the fuzz targets (Fuzz/, scripts/fuzz.sh) found in relay-server and relay-agent
/// parsers, kept as regression tests; the comment names the target that found each.
@Suite struct FuzzFindingsTests {
    /// Targets `relay-config` and `agent-config`: a duration too large for Int64 milliseconds
    /// (a float such as `1e300` or `inf`, or a unit count that overflows on multiplying or
    /// adding) trapped instead of being rejected, so relay-server or relay-agent died at start
    /// without naming the field.
    @Test(arguments: ["inf", "+inf", "1e300", "9223372036854775.808", "9999999999999999h", "106751991168d",
                      "9223372036854775807ms1ms", "2562047788015215h1h", "0x1p70"])
    func oversizedDurationsAreRejected(text: String) {
        #expect(ConfigDuration(parsing: text) == nil)
    }

    @Test func largestDurationsStillParse() {
        #expect(ConfigDuration(parsing: "9223372036854775807ms")?.milliseconds == Int64.max)
        let days: Int64 = 106_751_991_167
        #expect(ConfigDuration(parsing: "\(days)d")?.duration == .milliseconds(days * 86_400_000))
        #expect(ConfigDuration(parsing: "1.5")?.milliseconds == 1500)
    }

    /// Target `flux-event`: a timestamp with a long run of digits made ICU (behind
    /// ISO8601DateFormatter, which `RFC3339.parse` used) die with SIGFPE, so one unauthenticated
    /// POST /flux/events (the generic provider has no signature) killed relay-agent. The body is
    /// the fuzzer's input, minimized.
    static let eventWithLongFraction = Data(base64Encoded:
        "eyJpbnZvbHZlZE9iamVjdCI6IHsia2luZCI6ICJIIiwgIm5hbWUiOiJwbyJ9LCJ0aW1lc3RhbXAiOiAiMDUtMDEtMlQwMzowNDowNS4xNDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NGQifQ==")!

    @Test func eventTimestampsWithLongDigitRunsDoNotCrash() throws {
        let event = try FluxEventReceiver.event(from: Self.eventWithLongFraction)
        #expect(event.kind == "H" && event.name == "po")
        #expect(event.timestampUnixMs == 0, "not a timestamp: no time")
        let fraction = String(repeating: "1", count: 40)
        #expect(RFC3339.parse("2026-01-02T03:04:05.\(fraction)Z") == RFC3339.parse("2026-01-02T03:04:05.111111111Z"))
    }

    /// The hand-written parser that replaced ICU reads what Kubernetes, Flux and `RFC3339.format`
    /// write, and rejects what Go's `time.RFC3339` rejects.
    @Test func rfc3339ReadsWhatKubernetesAndFluxWrite() {
        let cases: [(String, Double?)] = [
            ("1970-01-01T00:00:00Z", 0), ("2026-11-21T10:00:00Z", 1_795_255_200), ("2026-11-21t10:00:00.25z", 1_795_255_200.25),
            ("2024-02-29T23:59:59.5-05:30", 1_709_270_999.5), ("0001-01-01T00:00:00Z", -62_135_596_800),
            ("9999-12-31T23:59:59.999999999+00:00", 253_402_300_799.999999999),
            ("2023-02-29T00:00:00Z", nil), ("2026-01-02 03:04:05Z", nil), ("2026-01-02T03:04:05", nil),
            ("2026-01-02T03:04:05.Z", nil), ("2026-01-02T24:00:00Z", nil), ("2026-01-02T03:04:60Z", nil),
            ("2026-1-02T03:04:05Z", nil), ("2026-01-02T03:04:05+0200", nil), ("2026-01-02T03:04:05Z ", nil), ("", nil),
        ]
        for (text, expected) in cases {
            #expect(RFC3339.parse(text)?.timeIntervalSince1970 == expected, "\(text)")
        }
        let now = Date()
        let parsed = RFC3339.parse(RFC3339.format(now, milliseconds: true))?.timeIntervalSince1970 ?? 0
        #expect((0..<0.001).contains(now.timeIntervalSince1970 - parsed), "\(now) read back as \(parsed)")
    }

    /// Target `flux-event` (its RFC 3339 round trip): `RFC3339.format` floored `t × 1000` in
    /// floating point, so a time of exactly N ms could print as N − 1 (1.001 s as ".000"), and
    /// event timestamps lost a millisecond the same way on their way to Unix milliseconds.
    @Test func millisecondsSurviveFormattingAndParsing() throws {
        #expect(RFC3339.format(Date(timeIntervalSince1970: 1.001), milliseconds: true) == "1970-01-01T00:00:01.001Z")
        let event = try FluxEventReceiver.event(from: Data(base64Encoded:
            "eyJpbnZvbHZlZE9iamVjdCI6IHsia2luZCI6ICJIIiwgIm5hbWUiOiAiQXJycG9kaW5mbyJ9LCAic2V2ZXJpdHkiOiAiaW5mbyIsICJ0aW1lc3RhbXAiOiAiMTQ1NC0wMi0wMlQwMzowNTowNS4xKzAyOjAwIiwgIkFyZXNzYWdlIjogIkhlZGUgc3VNTU1NZGVkIn0=")!)
        #expect(event.timestampUnixMs == -16_280_607_294_900)
        let written = RFC3339.format(Date(timeIntervalSince1970: Double(event.timestampUnixMs) / 1000), milliseconds: true)
        #expect(written == "1454-02-02T01:05:05.100Z")
        let oneMillisecond = try FluxEventReceiver.event(from: Data(
            #"{"involvedObject":{"kind":"K","name":"n"},"timestamp":"1970-01-01T00:00:01.001Z"}"#.utf8))
        #expect(oneMillisecond.timestampUnixMs == 1001)
        // Every millisecond prints as itself, across 1970 ± 300 years.
        var misprinted: [Int64] = []
        for step in Int64(-5000)..<5000 {
            let ms = step * 1_893_270_457 + step % 1000
            let text = RFC3339.format(Date(timeIntervalSince1970: Double(ms) / 1000), milliseconds: true)
            if RFC3339.parseMilliseconds(text) != ms { misprinted.append(ms) }
        }
        #expect(misprinted.isEmpty, "\(misprinted.count) of 10000 misprinted, e.g. \(misprinted.prefix(3))")
    }

    /// The same body against a running relay-agent: it is journaled and the agent stays up.
    @Test func aRunningAgentTakesTheEventAndStaysUp() throws {
        let (dir, _, harness) = try RelayHarness.single("fuzz-event")
        defer { harness.shutdown(); dir.remove() }
        let port = try harness.serveFlux("edge")
        try harness.startRelay()
        let agent = try harness.startAgent("edge")
        try harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/healthz").status == 200 }
        let status = try? HTTPProbe.request("http://127.0.0.1:\(port)/flux/events", method: "POST",
                                            headers: ["Content-Type: application/json"], body: Self.eventWithLongFraction).status
        #expect(status == 202)
        #expect(try HTTPProbe.request("http://127.0.0.1:\(port)/healthz").status == 200)
        #expect(agent.isRunning)
    }
}
