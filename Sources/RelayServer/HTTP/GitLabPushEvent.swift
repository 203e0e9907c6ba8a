import ArtifactMirror
import Foundation

/// The parts of a GitLab push (or tag push) webhook body Relay uses.
/// See GitLab's "Push events" webhook documentation: `ref`, `project.git_http_url`,
/// `project.git_ssh_url`, `project.http_url`, `repository.url`.
struct GitLabPushEvent: Decodable {
    struct Project: Decodable {
        var git_http_url: String?
        var git_ssh_url: String?
        var http_url: String?
        var ssh_url: String?
        var web_url: String?
    }

    struct Repository: Decodable {
        var url: String?
        var git_http_url: String?
        var git_ssh_url: String?
        var homepage: String?
    }

    var object_kind: String?
    var ref: String
    var project: Project?
    var repository: Repository?

    /// Every repository address the event mentions.
    var urls: [String] {
        [project?.git_http_url, project?.git_ssh_url, project?.http_url, project?.ssh_url, project?.web_url,
         repository?.url, repository?.git_http_url, repository?.git_ssh_url, repository?.homepage].compactMap { $0 }
    }

    /// The sources this push concerns: same repository, and a ref the source follows.
    func matchingSources(_ sources: [ResolvedServerConfig.Source]) -> [String] {
        let pushed = Set(urls.map(Self.normalize))
        return sources.filter { source in
            guard let remote = source.remote, pushed.contains(Self.normalize(remote.identity)) else { return false }
            switch source.reference {
            case .branch(let branch)?: return ref == "refs/heads/\(branch)"
            case .tag?, .semver?: return ref.hasPrefix("refs/tags/")
            case .name(let name)?: return ref == name
            case .commit?: return false  // pinned: a push changes nothing
            case nil: return ref == "refs/heads/master"
            }
        }.map(\.name)
    }

    /// `host/path` without scheme, credentials, port, trailing `.git` or `/`, lower-cased host;
    /// scp-like `git@host:path` becomes `host/path`. Local paths stay paths.
    static func normalize(_ address: String) -> String {
        var text = address.trimmingCharacters(in: .whitespaces)
        if let scheme = text.range(of: "://") {
            text = String(text[scheme.upperBound...])
            if let slash = text.firstIndex(of: "/") {
                var host = String(text[..<slash])
                if let at = host.lastIndex(of: "@") { host = String(host[host.index(after: at)...]) }
                if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") { host = String(host[..<colon]) }
                text = host.lowercased() + text[slash...]
            }
        } else if !text.hasPrefix("/"), let colon = text.firstIndex(of: ":") {
            var host = String(text[..<colon])
            if let at = host.lastIndex(of: "@") { host = String(host[host.index(after: at)...]) }
            text = host.lowercased() + "/" + text[text.index(after: colon)...].drop { $0 == "/" }
        }
        while text.hasSuffix("/") { text.removeLast() }
        if text.hasSuffix(".git") { text.removeLast(4) }
        return text
    }
}
