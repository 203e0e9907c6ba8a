@testable import RelayAgent
import Foundation

/// The agent's OCI distribution routes (`OCIRoute.parse` on the raw request path) and the
/// name, tag and digest checks every route goes through before touching the store.
///
/// Input: a request path (bytes as the HTTP server would hand them over, decoded as UTF-8).
///
/// Invariants: a parsed route rebuilds the exact path it came from; the hand-written name,
/// tag and digest checks agree with the distribution spec's regular expressions; no accepted
/// name has a `..` component, a leading `/`, a NUL or a backslash, and no accepted tag a `/`.
enum OCIRouteTarget {
    static func run(_ input: Data) {
        let path = String(decoding: input, as: UTF8.self)
        let route = OCIRoute.parse(path)
        switch route {
        case .base:
            require(path == "/v2" || path == "/v2/", "base route for \(path)")
        case .token:
            require(path == "/v2/token", "token route for \(path)")
        case .manifest(let name, let reference):
            require("/v2/\(name)/manifests/\(reference)" == path, "manifest route \(name) \(reference) from \(path)")
            check(name: name)
            check(tag: reference)
            check(digest: reference)
        case .blob(let name, let digest):
            require("/v2/\(name)/blobs/\(digest)" == path, "blob route \(name) \(digest) from \(path)")
            check(name: name)
            check(digest: digest)
        case .referrers(let name, let digest):
            require("/v2/\(name)/referrers/\(digest)" == path, "referrers route \(name) \(digest) from \(path)")
            require(!digest.contains("/"), "referrers digest with a slash from \(path)")
        case .tags(let name):
            require("/v2/\(name)/tags/list" == path, "tags route \(name) from \(path)")
            check(name: name)
        case .notFound:
            break
        }
        // The grammar checks on arbitrary text too, not only on what the router splits off.
        check(name: path)
        check(tag: path)
        check(digest: path)
    }

    private static let name = Grammar("[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*")
    private static let tag = Grammar("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
    private static let digest = Grammar("sha256:[a-f0-9]{64}")

    private static func check(name text: String) {
        let accepted = OCINames.isRepository(text)
        require(accepted == (name.matches(text) && text.utf8.count <= 255), "isRepository(\(text.debugDescription)) = \(accepted)")
        if accepted {
            require(!text.split(separator: "/", omittingEmptySubsequences: false).contains { $0 == ".." || $0 == "." || $0.isEmpty }
                    && !text.contains("\0") && !text.contains("\\"), "unsafe name \(text.debugDescription) accepted")
        }
    }

    private static func check(tag text: String) {
        let accepted = OCINames.isTag(text)
        require(accepted == tag.matches(text), "isTag(\(text.debugDescription)) = \(accepted)")
        require(!accepted || !text.contains("/"), "tag \(text.debugDescription) with a slash accepted")
    }

    private static func check(digest text: String) {
        let accepted = OCINames.isSHA256Digest(text)
        require(accepted == digest.matches(text), "isSHA256Digest(\(text.debugDescription)) = \(accepted)")
    }
}

/// A whole-string regular expression.
struct Grammar: @unchecked Sendable {
    let expression: NSRegularExpression

    init(_ pattern: String) {
        expression = try! NSRegularExpression(pattern: "\\A(?:\(pattern))\\z")
    }

    func matches(_ text: String) -> Bool {
        // The grammars are ASCII: anything else cannot match, and NSString would count UTF-16.
        guard text.utf8.allSatisfy({ $0 < 0x80 }) else { return false }
        return expression.firstMatch(in: text, range: NSRange(location: 0, length: (text as NSString).length)) != nil
    }
}
