import Foundation
import Yams

/// `relay-access.yaml`, read from a Git source (relay.yaml `access:`), so who may receive
/// what changes through merge requests:
///
/// ```yaml
/// agents:
///   - name: eu-1
///     sources: [podinfo, charts]
///     environment: production/eu-1     # optional: the GitLab environment (freezes match it)
///     tokenSHA256: <64 hex>            # optional: an agent only this file declares
/// ```
///
/// Every agent the relay knows that the file does not name keeps no grant. A file that does
/// not validate changes nothing; its error names the file, the field and the reason.
public struct AccessFile: Sendable, Equatable, Codable {
    public struct Agent: Sendable, Equatable, Codable {
        public var name: String
        public var sources: [String]
        public var environment: String?
        public var tokenSHA256: String?
    }
    public var agents: [Agent]

    /// Largest file read (a grant list for 10,000 agents fits).
    public static let maxBytes = 1 << 20

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var file: String
        public var field: String
        public var reason: String
        public var description: String { field.isEmpty ? "\(file): \(reason)" : "\(file): \(field): \(reason)" }
    }

    /// Parses and validates `text` against the relay's sources and the agents it knows (with a token).
    public static func parse(_ text: String, file: String, sources: Set<String>, knownAgents: Set<String>) throws(Invalid) -> AccessFile {
        func fail(_ field: String, _ reason: String) -> Invalid { Invalid(file: file, field: field, reason: reason) }
        guard text.utf8.count <= maxBytes else { throw fail("", "larger than \(maxBytes) bytes") }
        let root: Node
        do { root = try UpstreamYAML.compose(text, what: file) } catch { throw fail("", error.message) }
        guard case .mapping(let top) = root else { throw fail("", "expected a mapping with agents: [...]") }
        for key in top.keys where key.string != "agents" { throw fail(key.string ?? "?", "unknown field (expected agents)") }
        guard let list = top["agents"] else { throw fail("agents", "missing: list the agents and their sources") }
        guard case .sequence(let entries) = list else { throw fail("agents", "expected a list") }
        var agents: [Agent] = []
        var seen = Set<String>()
        for (index, entry) in entries.enumerated() {
            let field = "agents[\(index)]"
            guard case .mapping(let mapping) = entry else { throw fail(field, "expected a mapping {name, sources}") }
            for key in mapping.keys where !["name", "sources", "environment", "tokenSHA256"].contains(key.string ?? "") {
                throw fail("\(field).\(key.string ?? "?")", "unknown field (expected name, sources, environment, tokenSHA256)")
            }
            guard let name = UpstreamYAML.text(mapping["name"]), ServerConfig.isValidName(name) else {
                throw fail("\(field).name", "expected 1-63 characters of a-z, 0-9, '-', '.', '_'")
            }
            guard seen.insert(name).inserted else { throw fail("\(field).name", "agent '\(name)' is listed twice") }
            var granted: [String] = []
            if let node = mapping["sources"] {
                guard case .sequence(let items) = node else { throw fail("\(field).sources", "expected a list of source names") }
                for (i, item) in items.enumerated() {
                    guard let source = UpstreamYAML.text(item), sources.contains(source) else {
                        throw fail("\(field).sources[\(i)]", "unknown source '\(UpstreamYAML.text(item) ?? "?")' (relay.yaml sources: \(sources.sorted().joined(separator: ", ")))")
                    }
                    granted.append(source)
                }
            }
            var environment: String?
            if let node = mapping["environment"] {
                guard let text = UpstreamYAML.text(node), !text.isEmpty, text.count <= 255 else {
                    throw fail("\(field).environment", "expected a GitLab environment name, e.g. production/eu-1")
                }
                environment = text
            }
            var token: String?
            if let node = mapping["tokenSHA256"] {
                guard let text = UpstreamYAML.text(node)?.lowercased(), text.count == 64, text.allSatisfy(\.isHexDigit) else {
                    throw fail("\(field).tokenSHA256", "expected 64 hex digits (sha256sum of the agent's token)")
                }
                token = text
            }
            if token == nil, !knownAgents.contains(name) {
                throw fail("\(field).name", "agent '\(name)' has no token: add tokenSHA256, list it in relay.yaml agents or create it (relay-server agents create)")
            }
            agents.append(Agent(name: name, sources: granted, environment: environment, tokenSHA256: token))
        }
        return AccessFile(agents: agents)
    }
}
