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
        let metadata: [String: Any]
        do {
            guard let parsed = try Yams.load(yaml: String(decoding: chart.chartYAML, as: UTF8.self)) as? [String: Any] else {
                throw UpstreamError(.refusedContent, "Chart.yaml is not a YAML mapping")
            }
            metadata = parsed
        } catch let error as UpstreamError { throw error } catch {
            throw UpstreamError(.refusedContent, "Chart.yaml does not parse: \(String(describing: error).prefix(200))")
        }
        let config = Data(configJSON(metadata).utf8)
        let configDigest = OCIPayload.digest(of: config)
        var annotations: [String: String] = [:]
        if let chartAnnotations = metadata["annotations"] as? [String: Any] {
            for (key, value) in chartAnnotations { annotations[key] = "\(value)" }
        }
        let name = string(metadata["name"]) ?? chart.directory
        func set(_ key: String, _ value: String?) { if let value, !value.isEmpty { annotations[key] = value } }
        set("org.opencontainers.image.description", string(metadata["description"]))
        annotations["org.opencontainers.image.title"] = name
        annotations["org.opencontainers.image.version"] = version
        set("org.opencontainers.image.url", string(metadata["home"]))
        annotations["org.opencontainers.image.created"] = created.flatMap { RFC3339.parse($0) }.map { RFC3339.format($0) } ?? "1970-01-01T00:00:00Z"
        set("org.opencontainers.image.source", (metadata["sources"] as? [Any])?.first.flatMap(string))
        if let maintainers = metadata["maintainers"] as? [[String: Any]], !maintainers.isEmpty {
            set("org.opencontainers.image.authors", maintainers.map { maintainer in
                var text = string(maintainer["name"]) ?? ""
                if let email = string(maintainer["email"]), !email.isEmpty { text += " (\(email))" }
                return text
            }.joined(separator: ", "))
        }
        // ocispec.Manifest field order; no top-level mediaType (Helm leaves it out).
        var json = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\(go(OCIPayload.helmConfigMediaType)),\"digest\":\(go(configDigest)),\"size\":\(config.count)},"
        json += "\"layers\":[{\"mediaType\":\(go(OCIPayload.helmChartMediaType)),\"digest\":\(go(chart.digest)),\"size\":\(chart.size)}],"
        json += "\"annotations\":{" + annotations.keys.sorted().map { "\(go($0)):\(go(annotations[$0]!))" }.joined(separator: ",") + "}}"
        return OCIPayload(kind: .helm, manifest: Data(json.utf8), mediaType: "application/vnd.oci.image.manifest.v1+json",
                          blobs: [configDigest: config], tags: [OCIPayload.helmTag(forVersion: version)])
    }

    /// Chart.yaml as `json.Marshal(chart.Metadata)` writes it: Go's field order, empty fields left out.
    static func configJSON(_ metadata: [String: Any]) -> String {
        let order = ["name", "home", "sources", "version", "description", "keywords", "maintainers", "icon", "apiVersion",
                     "condition", "tags", "appVersion", "deprecated", "annotations", "kubeVersion", "dependencies", "type"]
        let nested = ["maintainers": ["name", "email", "url"],
                      "dependencies": ["name", "version", "repository", "condition", "tags", "enabled", "import-values", "alias"]]
        var fields: [String] = []
        for key in order {
            guard let value = metadata[key], let text = encode(value, objectOrder: nested[key]) else { continue }
            fields.append("\(go(key)):\(text)")
        }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// A YAML value as Go's encoder writes it; nil for what `omitempty` leaves out.
    private static func encode(_ value: Any, objectOrder: [String]? = nil) -> String? {
        switch value {
        case let text as String: return text.isEmpty ? nil : go(text)
        case let flag as Bool: return flag ? "true" : nil
        case let number as Int: return String(number)
        case let number as Double: return String(number)
        case let list as [Any]:
            let items = list.compactMap { item -> String? in
                if let objectOrder, let object = item as? [String: Any] { return encodeObject(object, order: objectOrder) }
                return encode(item) ?? (item is String ? "\"\"" : nil)
            }
            return items.isEmpty ? nil : "[" + items.joined(separator: ",") + "]"
        case let map as [String: Any]:
            guard !map.isEmpty else { return nil }
            return "{" + map.keys.sorted().map { "\(go($0)):\(go(string(map[$0]) ?? ""))" }.joined(separator: ",") + "}"
        default: return nil
        }
    }

    private static func encodeObject(_ object: [String: Any], order: [String]) -> String {
        "{" + order.compactMap { key in object[key].flatMap { encode($0) }.map { "\(go(key)):\($0)" } }.joined(separator: ",") + "}"
    }

    private static func string(_ value: Any?) -> String? {
        switch value {
        case let text as String: text
        case let number as Int: String(number)
        case let number as Double: String(number)
        case let flag as Bool: flag ? "true" : "false"
        default: nil
        }
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
