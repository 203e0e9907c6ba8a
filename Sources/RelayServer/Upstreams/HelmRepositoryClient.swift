import ArtifactMirror
import Foundation
import NIOHTTP1
import Yams

/// A Helm HTTP repository: `index.yaml`, then the chart `.tgz` it lists. Credentials go to
/// the repository's own origin only (Helm's default; a chart URL on another host is fetched
/// without them). The index's `digest` is checked against the download, which Flux's
/// source-controller does not do.
struct HelmRepositoryClient: Sendable {
    struct Entry: Sendable, Decodable {
        var name: String?
        var version: String
        var urls: [String]?
        var digest: String?
        var created: String?
    }

    let http: UpstreamHTTP
    let upstream: HelmRepositoryUpstream
    /// A large index is parsed whole: bounded (a 44 MB index × workers once took
    /// source-controller down, source-controller#192).
    static let maxIndexBytes = 32 << 20

    /// The entry for the wanted version: exact, or the highest in the range.
    func resolve() async throws(UpstreamError) -> Entry {
        let url = "\(upstream.url)/index.yaml"
        let reply = try await http.get(url, limit: Self.maxIndexBytes, headers: headers())
        switch reply.status.code {
        case 200: break
        case 401, 403:
            throw UpstreamError(.unauthorized, "\(url) answered \(reply.status.code): "
                + (upstream.access.username == nil ? "set auth.username and auth.passwordFile" : "check auth.username and auth.passwordFile"))
        case 404: throw UpstreamError(.notFound, "\(url) answered 404: check helm.url (the index.yaml must be beside it)")
        default: throw UpstreamError(.badResponse, "\(url) answered HTTP \(reply.status.code)")
        }
        // Only this chart's entries are decoded; an entry Helm would skip (no version, say) is
        // skipped here too rather than failing the whole index.
        let index = try UpstreamYAML.compose(String(decoding: reply.body, as: UTF8.self), what: url)
        guard case .mapping(let root) = index, case .mapping(let all)? = root["entries"] else {
            throw UpstreamError(.badResponse, "\(url) is not a Helm repository index (no entries mapping)")
        }
        guard case .sequence(let listed)? = all[upstream.chart] else {
            throw UpstreamError(.notFound, "\(url) lists no chart '\(upstream.chart)'")
        }
        let entries = listed.compactMap { try? YAMLDecoder().decode(Entry.self, from: $0) }
        guard !entries.isEmpty else { throw UpstreamError(.notFound, "\(url) lists no usable version of '\(upstream.chart)'") }
        switch upstream.version {
        case .exact(let wanted):
            let version = SemanticVersion(lenient: wanted)
            guard let entry = entries.first(where: { $0.version == wanted || (version != nil && SemanticVersion(lenient: $0.version) == version) }) else {
                throw UpstreamError(.notFound, "\(url) has no version \(wanted) of '\(upstream.chart)'")
            }
            return entry
        case .range(let constraint):
            guard let best = SemVerTagSelector.highestTag(matching: constraint, among: entries.map(\.version)),
                  let entry = entries.first(where: { $0.version == best.tag }) else {
                throw UpstreamError(.notFound, "\(url) has no version of '\(upstream.chart)' in the range \(constraint.text)")
            }
            return entry
        }
    }

    /// Downloads the entry's chart into `path`; returns its digest and size. The index's
    /// digest, when given, must match.
    func download(_ entry: Entry, to path: String, limit: UInt64) async throws(UpstreamError) -> (digest: String, size: UInt64) {
        guard let first = entry.urls?.first, let url = URL(string: first, relativeTo: URL(string: upstream.url + "/"))?.absoluteString else {
            throw UpstreamError(.badResponse, "the index lists \(upstream.chart) \(entry.version) without a download URL")
        }
        let result = try await http.download(url, to: path, limit: limit, headers: headers())
        switch result.reply.status.code {
        case 200: break
        case 401, 403: throw UpstreamError(.unauthorized, "\(UpstreamHTTP.redacted(url)) answered \(result.reply.status.code); check auth")
        case 404: throw UpstreamError(.notFound, "\(UpstreamHTTP.redacted(url)) answered 404: the index lists a chart that is not there")
        default: throw UpstreamError(.badResponse, "\(UpstreamHTTP.redacted(url)) answered HTTP \(result.reply.status.code)")
        }
        if let listed = entry.digest?.lowercased(), !listed.isEmpty {
            let expected = listed.hasPrefix("sha256:") ? listed : "sha256:" + listed
            guard expected == result.digest else {
                throw UpstreamError(.digestMismatch, "\(upstream.chart) \(entry.version): the index gives digest \(expected), "
                    + "the download from \(UpstreamHTTP.redacted(url)) hashes to \(result.digest); not used (the repository is inconsistent or tampered with)")
            }
        }
        return (result.digest, result.size)
    }

    private func headers() -> @Sendable (String) -> HTTPHeaders {
        let basic = UpstreamHTTP.basic(upstream.access)
        let origin = UpstreamHTTP.origin(of: upstream.url)
        return { url in
            var headers = HTTPHeaders()
            if let basic, UpstreamHTTP.origin(of: url) == origin { headers.add(name: "Authorization", value: basic) }
            return headers
        }
    }
}
