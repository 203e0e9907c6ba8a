import ArtifactMirror
import Foundation
import Provenance
import RelayShared
import Yams

/// A chart `.tgz` from an HTTP repository laid out as `helm push` lays it out in a registry
/// (helm `pkg/registry`): a config blob holding Chart.yaml as JSON, the `.tgz` as the one
/// chart layer, and the manifest with Helm's annotations. Helm's JSON (Go's encoder) is
/// written by hand: Go's field order and escaping are not what JSONEncoder produces, and
/// the bytes are hashed. The `created` annotation is the index's `created` for the version
/// (not the time of mirroring), so every replica and every poll builds the same manifest.
enum HelmChartLayout {
    static func payload(chart: ChartArchive, created: String?, version: String) throws(UpstreamError) -> OCIPayload {
        let node = try UpstreamYAML.compose(String(decoding: chart.chartYAML, as: UTF8.self), what: "Chart.yaml")
        guard case .mapping(let metadata) = node else { throw UpstreamError(.refusedContent, "Chart.yaml is not a YAML mapping") }
        let config = Data(configJSON(metadata).utf8)
        let configDigest = OCIPayload.digest(of: config)
        // helm's generateChartOCIAnnotations, then Chart.yaml's annotations over them (all
        // but title and version, which stay the chart's).
        var annotations: [String: String] = [:]
        func set(_ key: String, _ value: String?) { if let value, !value.isEmpty { annotations[key] = value } }
        let name = UpstreamYAML.text(metadata["name"]) ?? chart.directory
        set("org.opencontainers.image.description", UpstreamYAML.text(metadata["description"]))
        set("org.opencontainers.image.url", UpstreamYAML.text(metadata["home"]))
        annotations["org.opencontainers.image.created"] = created.flatMap { RFC3339.parse($0) }.map { RFC3339.format($0) } ?? "1970-01-01T00:00:00Z"
        if case .sequence(let sources)? = metadata["sources"] { set("org.opencontainers.image.source", sources.first.flatMap(UpstreamYAML.text)) }
        if case .sequence(let maintainers)? = metadata["maintainers"], !maintainers.isEmpty {
            set("org.opencontainers.image.authors", maintainers.map { maintainer in
                guard case .mapping(let fields) = maintainer else { return "" }
                var text = UpstreamYAML.text(fields["name"]) ?? ""
                if let email = UpstreamYAML.text(fields["email"]), !email.isEmpty { text += " (\(email))" }
                return text
            }.joined(separator: ", "))
        }
        if case .mapping(let chartAnnotations)? = metadata["annotations"] {
            for (key, value) in chartAnnotations {
                guard let key = UpstreamYAML.text(key), let value = UpstreamYAML.text(value) else { continue }
                annotations[key] = value
            }
        }
        annotations["org.opencontainers.image.title"] = name
        annotations["org.opencontainers.image.version"] = version
        // ocispec.Manifest field order; no top-level mediaType (Helm leaves it out).
        var json = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\(go(OCIPayload.helmConfigMediaType)),\"digest\":\(go(configDigest)),\"size\":\(config.count)},"
        json += "\"layers\":[{\"mediaType\":\(go(OCIPayload.helmChartMediaType)),\"digest\":\(go(chart.digest)),\"size\":\(chart.size)}],"
        json += "\"annotations\":{" + annotations.keys.sorted().map { "\(go($0)):\(go(annotations[$0]!))" }.joined(separator: ",") + "}}"
        return OCIPayload(kind: .helm, manifest: Data(json.utf8), mediaType: "application/vnd.oci.image.manifest.v1+json",
                          blobs: [configDigest: config], tags: [OCIPayload.helmTag(forVersion: version)])
    }

    /// Chart.yaml as `json.Marshal(chart.Metadata)` writes it: Go's field order, empty fields
    /// left out, and every field of Metadata's string type written as the scalar's own text (so
    /// `appVersion: 1.10` is "1.10", which Helm's pull can read back into its string field).
    static func configJSON(_ metadata: Node.Mapping) -> String {
        enum Kind { case string, strings, bool, map, maintainers, dependencies }
        let fields: [(String, Kind)] = [
            ("name", .string), ("home", .string), ("sources", .strings), ("version", .string), ("description", .string),
            ("keywords", .strings), ("maintainers", .maintainers), ("icon", .string), ("apiVersion", .string),
            ("condition", .string), ("tags", .string), ("appVersion", .string), ("deprecated", .bool), ("annotations", .map),
            ("kubeVersion", .string), ("dependencies", .dependencies), ("type", .string),
        ]
        func string(_ node: Node?) -> String? { UpstreamYAML.text(node).flatMap { $0.isEmpty ? nil : go($0) } }
        func strings(_ node: Node?) -> String? {
            guard case .sequence(let items)? = node, !items.isEmpty else { return nil }
            return "[" + items.map { go(UpstreamYAML.text($0) ?? "") }.joined(separator: ",") + "]"
        }
        func bool(_ node: Node?) -> String? { ["true", "yes", "on"].contains(UpstreamYAML.text(node)?.lowercased() ?? "") ? "true" : nil }
        func map(_ node: Node?) -> String? {
            guard case .mapping(let pairs)? = node, !pairs.isEmpty else { return nil }
            let entries = pairs.compactMap { pair -> (String, String)? in
                guard let key = UpstreamYAML.text(pair.key) else { return nil }
                return (key, UpstreamYAML.text(pair.value) ?? "")
            }.sorted { $0.0 < $1.0 }
            return "{" + entries.map { "\(go($0.0)):\(go($0.1))" }.joined(separator: ",") + "}"
        }
        func objects(_ node: Node?, _ order: [(String, Kind)]) -> String? {
            guard case .sequence(let items)? = node, !items.isEmpty else { return nil }
            return "[" + items.map { item in
                guard case .mapping(let object) = item else { return "{}" }
                return "{" + order.compactMap { key, kind in value(object[key], kind).map { "\(go(key)):\($0)" } }.joined(separator: ",") + "}"
            }.joined(separator: ",") + "]"
        }
        func value(_ node: Node?, _ kind: Kind) -> String? {
            switch kind {
            case .string: string(node)
            case .strings: strings(node)
            case .bool: bool(node)
            case .map: map(node)
            case .maintainers: objects(node, [("name", .string), ("email", .string), ("url", .string)])
            case .dependencies: objects(node, [("name", .string), ("version", .string), ("repository", .string), ("condition", .string),
                                               ("tags", .strings), ("enabled", .bool), ("alias", .string)])
            }
        }
        return "{" + fields.compactMap { key, kind in value(metadata[key], kind).map { "\(go(key)):\($0)" } }.joined(separator: ",") + "}"
    }

    /// A JSON string as Go's encoder writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped too.
    static func go(_ text: String) -> String {
        var out = JSONText.quoted(text)
        for (from, to) in [("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u{2028}", "\\u2028"), ("\u{2029}", "\\u2029")] {
            out = out.replacingOccurrences(of: from, with: to)
        }
        return out
    }
}
