import Foundation

/// The Python relay.v1 client (`Fixtures/interop/relay_client.py`) against a harness's relay:
/// one JSON object on stdout, parsed.
struct InteropClient {
    struct Outcome {
        var status: Int32
        var json: [String: Any]
        var stderr: String

        /// `error.code` of a failed run (a grpc.StatusCode name or the client's own code).
        var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
        var errorDetails: String { ((json["error"] as? [String: Any])?["details"] as? String) ?? "" }
        /// How the relay ended Connect: "OK", "DRAINED", "OPEN" or a grpc.StatusCode name.
        var connectEnd: String? { (json["connect_end"] as? [String: Any])?["code"] as? String }
        var connectEndDetails: String { ((json["connect_end"] as? [String: Any])?["details"] as? String) ?? "" }
        var artifacts: [[String: Any]] { json["artifacts"] as? [[String: Any]] ?? [] }
    }

    static let script = InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/interop/relay_client.py").path

    let python: String
    let harness: RelayHarness

    init(harness: RelayHarness) throws {
        python = try InteropTests.python()
        self.harness = harness
    }

    /// The command line for `token` plus `extra` arguments.
    func arguments(token: String, _ extra: [String], timeout: Double = 20) throws -> [String] {
        let tokenFile = harness.dir.appending("interop-\(UUID().uuidString.prefix(8)).token")
        try Data(token.utf8).write(to: tokenFile)
        return [Self.script, "--target", "localhost:\(harness.tunnelPort)", "--ca", harness.certificates.caCertificate.path,
                "--token-file", tokenFile.path, "--timeout", String(timeout)] + extra
    }

    /// Runs the client to the end.
    func run(token: String, _ extra: [String] = [], timeout: Double = 20) throws -> Outcome {
        let output = try runProcess(python, try arguments(token: token, extra, timeout: timeout),
                                    timeout: timeout + 30, allowFailure: true)
        return Self.outcome(status: output.status, stdout: output.stdout, stderr: output.stderr)
    }

    /// Starts the client in the background; its JSON lands in the process's log.
    func start(token: String, _ extra: [String], timeout: Double = 20) throws -> BackgroundProcess {
        try BackgroundProcess(name: "relay_client", executable: python, arguments: try arguments(token: token, extra, timeout: timeout),
                              logFile: harness.dir.appending("interop-\(UUID().uuidString.prefix(8)).log"))
    }

    /// The JSON a background client printed (its last line starting with `{`).
    static func outcome(of process: BackgroundProcess) -> Outcome {
        outcome(status: 0, stdout: process.log(), stderr: "")
    }

    static func outcome(status: Int32, stdout: String, stderr: String) -> Outcome {
        let line = stdout.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? "{}"
        let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        return Outcome(status: status, json: json, stderr: stderr)
    }
}

extension RelayHarness {
    /// The relay's `/metrics`, parsed.
    func relayMetrics() throws -> [String: Double] {
        try MetricsAndLogsTests.scrape("http://127.0.0.1:\(httpPort)/metrics")
    }

    /// `GET /api/v1/<path>` with the reader token, as JSON.
    func api(_ path: String) throws -> Any {
        let answer = try HTTPProbe.request("http://127.0.0.1:\(httpPort)/api/v1/\(path)", headers: ["Authorization: Bearer \(readerToken)"])
        guard answer.status == 200 else { throw HarnessError.timedOut("GET /api/v1/\(path): \(answer.status) \(answer.text)", relayLog: "", agentLogs: []) }
        return try JSONSerialization.jsonObject(with: answer.body)
    }

    /// Whether the status API shows `agent` as connected.
    func apiSaysConnected(_ agent: String) throws -> Bool? {
        let agents = try api("agents") as? [[String: Any]] ?? []
        return agents.first { $0["name"] as? String == agent }?["connected"] as? Bool
    }

    /// Waits until the relay has packaged `source` at least `count` times (its metric).
    func waitUntilPackaged(_ source: String, count: Double = 1) throws {
        try waitUntil("\(source) packaged") { try relayMetrics()["relay_artifacts_packaged_total{source=\"\(source)\"}"] ?? 0 >= count }
    }
}
