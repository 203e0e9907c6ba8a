import Crypto
import Foundation

/// An OpenSSH `known_hosts` file, used to check SSH host keys.
///
/// libgit2 hands Relay the server's raw host-key blob; this type decides whether that blob is
/// the one recorded for the host. It understands plain and hashed (`|1|salt|hash`) host
/// patterns, `[host]:port` entries, `*`/`?` wildcards, `!` negation, `@revoked` and
/// comments; `@cert-authority` lines are ignored (libgit2 does not pass certificates).
/// Hand-written because libgit2's own check reads only `~/.ssh/known_hosts` and cannot be
/// pointed at another file.
struct KnownHosts {
    struct Entry {
        var patterns: [String]
        var keyType: String
        var key: Data
        var revoked: Bool
    }

    enum Verdict: Equatable {
        case trusted
        case mismatch(recordedTypes: [String])
        case revoked
        case unknownHost
    }

    var entries: [Entry] = []

    init(contents: String) {
        for rawLine in contents.split(whereSeparator: \.isNewline) {
            var fields = rawLine.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = fields.first, !first.hasPrefix("#") else { continue }
            var revoked = false
            if first.hasPrefix("@") {
                guard first == "@revoked" else { continue }
                revoked = true
                fields.removeFirst()
            }
            guard fields.count >= 3, let key = Data(base64Encoded: fields[2]) else { continue }
            entries.append(Entry(patterns: fields[0].split(separator: ",").map(String.init),
                                 keyType: fields[1], key: key, revoked: revoked))
        }
    }

    init(path: String) throws(ArtifactMirrorError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .invalidArgument("known_hosts file \(path) does not exist or is not readable; "
                + "create it with: ssh-keyscan -p <port> <host> >> \(path)")
        }
        self.init(contents: String(decoding: data, as: UTF8.self))
    }

    /// The name OpenSSH records for a host: `host` on port 22, `[host]:port` otherwise.
    static func lookupName(host: String, port: Int) -> String {
        port == 22 ? host : "[\(host)]:\(port)"
    }

    func verify(host: String, port: Int, key: Data) -> Verdict {
        let name = Self.lookupName(host: host, port: port)
        let matching = entries.filter { Self.matches(patterns: $0.patterns, name: name) }
        if matching.contains(where: { $0.revoked && $0.key == key }) { return .revoked }
        let valid = matching.filter { !$0.revoked }
        if valid.isEmpty { return .unknownHost }
        if valid.contains(where: { $0.key == key }) { return .trusted }
        return .mismatch(recordedTypes: valid.map(\.keyType))
    }

    /// A comma-separated pattern list matches when some pattern matches and no negated one does.
    static func matches(patterns: [String], name: String) -> Bool {
        var matched = false
        for pattern in patterns {
            if pattern.hasPrefix("!") {
                if wildcardMatch(String(pattern.dropFirst()), name) { return false }
            } else if pattern.hasPrefix("|1|") {
                if hashedMatch(pattern, name) { matched = true }
            } else if wildcardMatch(pattern, name) {
                matched = true
            }
        }
        return matched
    }

    /// `|1|<base64 salt>|<base64 HMAC-SHA1(salt, name)>`.
    static func hashedMatch(_ pattern: String, _ name: String) -> Bool {
        let parts = pattern.split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 4, let salt = Data(base64Encoded: String(parts[2])),
              let expected = Data(base64Encoded: String(parts[3])) else { return false }
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(name.utf8), using: SymmetricKey(data: salt))
        return Data(mac) == expected
    }

    /// OpenSSH host wildcards: `*` any run, `?` one character; case-insensitive.
    static func wildcardMatch(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern.lowercased().utf8), n = Array(name.lowercased().utf8)
        var pi = 0, ni = 0, starP = -1, starN = 0
        while ni < n.count {
            if pi < p.count, p[pi] == UInt8(ascii: "?") || p[pi] == n[ni] {
                pi += 1; ni += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                starP = pi; starN = ni; pi += 1
            } else if starP >= 0 {
                pi = starP + 1; starN += 1; ni = starN
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}
