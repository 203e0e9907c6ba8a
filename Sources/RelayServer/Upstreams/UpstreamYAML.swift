import Foundation
import Yams

/// YAML from upstreams (a Helm repository's index.yaml, a chart's Chart.yaml), parsed once into
/// nodes and walked with a budget: aliases share their anchor's node, so a small hostile file
/// ("billion laughs") would otherwise make every walk over it take exponential time.
enum UpstreamYAML {
    /// Nodes visited at most (aliases counted each time they are reached).
    static let nodeBudget = 2_000_000

    static func compose(_ text: String, what: String) throws(UpstreamError) -> Node {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw UpstreamError(.badResponse, "\(what) is not YAML: \(String(describing: error).prefix(300))")
        }
        guard let node else { throw UpstreamError(.badResponse, "\(what) is empty") }
        var budget = nodeBudget
        guard fits(node, &budget) else {
            throw UpstreamError(.refusedContent, "\(what) expands to more than \(nodeBudget) YAML nodes (aliases nested on purpose?); not read")
        }
        return node
    }

    private static func fits(_ node: Node, _ budget: inout Int) -> Bool {
        budget -= 1
        guard budget >= 0 else { return false }
        switch node {
        case .scalar, .alias: return true
        case .sequence(let sequence): return sequence.allSatisfy { fits($0, &budget) }
        case .mapping(let mapping):
            for (key, value) in mapping where !fits(key, &budget) || !fits(value, &budget) { return false }
            return true
        }
    }

    /// The scalar's text exactly as written (`1.10` stays `1.10`).
    static func text(_ node: Node?) -> String? {
        if case .scalar(let scalar)? = node { return scalar.string }
        return nil
    }
}
