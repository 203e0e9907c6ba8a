import Foundation

/// The GitLab commit-status / Slack incoming-webhook STAND-IN
/// (Fixtures/notify-standin/notify_standin.py): neither service can run here, so a local
/// server checks each request against their documented APIs and records it.
final class NotifyStandIn: @unchecked Sendable {
    let process: BackgroundProcess
    let port: Int
    let gitlabToken: String
    var base: String { "http://127.0.0.1:\(port)" }

    init(dir: TemporaryDirectory, gitlabToken: String = "glpat-test-token") throws {
        self.gitlabToken = gitlabToken
        let script = InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/notify-standin/notify_standin.py").path
        let log = dir.appending("notify-standin.log")
        process = try BackgroundProcess(name: "notify-standin", executable: findExecutable("python3") ?? "/usr/bin/python3",
                                        arguments: [script, "--port", "0", "--gitlab-token", gitlabToken, "--max-seconds", "300"],
                                        logFile: log)
        var found: Int?
        let deadline = Date().addingTimeInterval(20)
        while found == nil, Date() < deadline {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            found = text.split(separator: "\n").first { $0.hasPrefix("listening ") }.flatMap { Int($0.dropFirst("listening ".count)) }
            if found == nil { Thread.sleep(forTimeInterval: 0.05) }
        }
        guard let found else {
            process.stop()
            throw KubeStandInError.control("notify stand-in did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
        port = found
    }

    func stop() { process.stop() }

    @discardableResult
    func control(_ method: String, _ path: String, _ body: Any? = nil) throws -> Any? {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let answer = try HTTPProbe.request(base + "/_standin/" + path, method: method, headers: ["Content-Type: application/json"], body: data)
        guard (200..<300).contains(answer.status) else { throw KubeStandInError.control("\(method) \(path): \(answer.status) \(answer.text)") }
        return try? JSONSerialization.jsonObject(with: answer.body)
    }

    func requests(_ service: String) throws -> [[String: Any]] {
        ((try control("GET", "requests") as? [[String: Any]]) ?? []).filter { $0["service"] as? String == service }
    }
}
