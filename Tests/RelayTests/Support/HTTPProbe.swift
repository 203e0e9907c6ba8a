import Crypto
import Foundation

/// One HTTP exchange made with curl (a client this project did not write), with the raw path
/// sent as given (`--path-as-is`), so traversal attempts reach the server unchanged.
struct HTTPProbe {
    var status: Int
    /// Header names lowercased.
    var headers: [String: String]
    var body: Data

    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: body) as? [String: Any] }
    /// The first OCI error code of an error body.
    var ociErrorCode: String? { ((json?["errors"] as? [[String: Any]])?.first?["code"]) as? String }
    var sha256: String { "sha256:" + SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined() }

    static func request(_ url: String, method: String = "GET", headers: [String] = [], user: String? = nil,
                        body: Data? = nil, caFile: String? = nil, maxTime: Int = 20) throws -> HTTPProbe {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("probe-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var arguments = ["curl", "-sS", "--path-as-is", "--max-time", String(maxTime), "-o", dir.appendingPathComponent("body").path,
                         "-D", dir.appendingPathComponent("headers").path, "-w", "%{http_code}"]
        arguments += method == "HEAD" ? ["-I"] : ["-X", method]
        for header in headers { arguments += ["-H", header] }
        if let user { arguments += ["-u", user] }
        if let caFile { arguments += ["--cacert", caFile] }
        if let body {
            let file = dir.appendingPathComponent("request")
            try body.write(to: file)
            arguments += ["--data-binary", "@\(file.path)"]
        }
        arguments.append(url)
        let output = try runProcess("/usr/bin/env", arguments, allowFailure: true)
        var fields: [String: String] = [:]
        let raw = (try? String(contentsOf: dir.appendingPathComponent("headers"), encoding: .utf8)) ?? ""
        for line in raw.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        // With -I curl writes the headers where the body would go: a HEAD has no body to read.
        let body = method == "HEAD" ? Data() : (try? Data(contentsOf: dir.appendingPathComponent("body"))) ?? Data()
        return HTTPProbe(status: Int(output.stdout) ?? 0, headers: fields, body: body)
    }
}
