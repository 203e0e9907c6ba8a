import AsyncHTTPClient
import ArtifactMirror
import Foundation
import NIOCore

/// `relay-server wait`: polls a relay's health endpoint until every targeted agent reports a
/// revision applied and healthy (0), one failed (1), or time runs out (2). Prints a table of
/// the agents each time it changes. A relay that cannot be reached is asked again until the
/// deadline; a refusal that asking again cannot fix (bad token, unknown source or revision
/// after the grace period) ends it with 3.
public struct RolloutWaiter: Sendable {
    public enum Outcome: Int32, Sendable { case healthy = 0, failed = 1, timedOut = 2, refused = 3 }

    public var relay: String
    public var token: String
    public var source: String
    public var revision: String
    public var agents: String?
    public var timeout: Duration
    public var interval: Duration = .seconds(2)
    /// How long an unknown revision is waited for (it may not be packaged yet).
    public var unknownRevisionGrace: Duration = .seconds(120)
    public var json = false

    public init(relay: String, token: String, source: String, revision: String, agents: String?, timeout: Duration, json: Bool) {
        self.relay = relay.hasSuffix("/") ? String(relay.dropLast()) : relay
        self.token = token
        self.source = source
        self.revision = revision
        self.agents = agents
        self.timeout = timeout
        self.json = json
    }

    struct Health: Decodable {
        struct Agent: Decodable { var agent: String; var state: String; var message: String }
        var revision: String
        var done: Bool
        var failed: Bool
        var agents: [Agent]
    }

    public func run(print output: @Sendable (String) -> Void) async -> Outcome {
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let outcome = await poll(http, print: output)
        try? await http.shutdown()
        return outcome
    }

    private func poll(_ http: HTTPClient, print output: @Sendable (String) -> Void) async -> Outcome {
        let start = ContinuousClock.now
        var lastTable = ""
        var lastBody = Data()
        var component = URLComponents()
        component.queryItems = [URLQueryItem(name: "revision", value: revision)] + (agents.map { [URLQueryItem(name: "agents", value: $0)] } ?? [])
        let encodedSource = source.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? source
        let url = "\(relay)/api/v1/sources/\(encodedSource)/health?\(component.percentEncodedQuery ?? "")"
        while true {
            let elapsed = ContinuousClock.now - start
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            do {
                let response = try await http.execute(request, timeout: .seconds(15))
                let body = Data((try await response.body.collect(upTo: 8 << 20)).readableBytesView)
                switch response.status.code {
                case 200:
                    let health = try JSONDecoder().decode(Health.self, from: body)
                    lastBody = body
                    let table = Self.table(health)
                    if table != lastTable, !json { output(table) }
                    lastTable = table
                    if health.failed {
                        if json { output(String(decoding: body, as: UTF8.self)) }
                        for agent in health.agents where agent.state == "failed" {
                            output("FAILED \(agent.agent): \(agent.message)")
                        }
                        return .failed
                    }
                    if health.done {
                        if json { output(String(decoding: body, as: UTF8.self)) }
                        return .healthy
                    }
                case 404 where elapsed < unknownRevisionGrace && String(decoding: body, as: UTF8.self).contains("no packaged revision"):
                    break  // not packaged yet: ask again
                case 401, 403, 404, 400:
                    output("error: the relay refused: \(response.status.code) \(String(decoding: body, as: UTF8.self))")
                    return .refused
                default:
                    output("warning: the relay answered \(response.status.code); asking again")
                }
            } catch {
                output("warning: cannot reach the relay (\(error)); asking again")
            }
            guard elapsed + interval < timeout else {
                if json, !lastBody.isEmpty { output(String(decoding: lastBody, as: UTF8.self)) }
                output("timed out after \(timeout) waiting for \(source) \(revision)")
                return .timedOut
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// One line per agent: name, state, message.
    static func table(_ health: Health) -> String {
        let width = max(5, health.agents.map(\.agent.count).max() ?? 0)
        var lines = ["\("AGENT".padding(toLength: width, withPad: " ", startingAt: 0))  STATE        MESSAGE   (\(health.revision))"]
        for agent in health.agents {
            lines.append("\(agent.agent.padding(toLength: width, withPad: " ", startingAt: 0))  \(agent.state.padding(toLength: 11, withPad: " ", startingAt: 0))  \(agent.message)")
        }
        return lines.joined(separator: "\n")
    }
}

/// `relay-server diff --relay`: the diff from a relay's API.
public enum RemoteDiff {
    public static func fetch(relay: String, token: String, source: String, from: String, to: String) async throws -> (Int, String) {
        let base = relay.hasSuffix("/") ? String(relay.dropLast()) : relay
        var query = URLComponents()
        query.queryItems = [URLQueryItem(name: "from", value: from), URLQueryItem(name: "to", value: to)]
        let encoded = source.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? source
        var request = HTTPClientRequest(url: "\(base)/api/v1/sources/\(encoded)/diff?\(query.percentEncodedQuery ?? "")")
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            let response = try await http.execute(request, timeout: .seconds(60))
            let body = try await response.body.collect(upTo: 256 << 20)
            try? await http.shutdown()
            return (Int(response.status.code), String(buffer: body))
        } catch {
            try? await http.shutdown()
            throw error
        }
    }
}

/// `relay-server diff --config`: the diff from the relay's own store.
public enum LocalDiff {
    public static func run(config: ResolvedServerConfig, registry: Registry, source: String, from: String, to: String) async throws -> String {
        guard config.sources.contains(where: { $0.name == source }) else { throw DiffError("no source named '\(source)'") }
        guard let old = try await registry.findRevision(from, source: source) else { throw DiffError("source '\(source)' has no packaged revision '\(from)'") }
        guard let new = try await registry.findRevision(to, source: source) else { throw DiffError("source '\(source)' has no packaged revision '\(to)'") }
        let store = try ArtifactStore(root: config.dataDirectory.appendingPathComponent("store"), retention: 10)
        return try RevisionDiff.unified(old: old, new: new, store: store)
    }

    /// Two artifact files (`.tar.gz`), as the relay would diff them.
    public static func files(_ old: String, _ new: String) throws -> String {
        TreeDiff.unified(old: try ArtifactFiles.read(path: old), new: try ArtifactFiles.read(path: new), oldLabel: "", newLabel: "",
                         blobID: RevisionDiff.gitBlobID)
    }

    struct DiffError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
