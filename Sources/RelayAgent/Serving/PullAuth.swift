@preconcurrency import Crypto
import Foundation
import HTTPTypes

/// Optional credentials for the OCI endpoint (spec §4.4). `basic`: every request carries
/// `Authorization: Basic`. `bearer`: `GET /v2/` answers 401 with a Bearer challenge whose
/// realm is this endpoint's `/v2/token`; that endpoint takes the same Basic credentials and
/// returns a short-lived token (HMAC-signed with a per-process key, so nothing is stored).
public struct PullAuth: Sendable {
    public enum Mode: String, Sendable, Decodable { case basic, bearer }

    public let mode: Mode
    let username: String
    let password: String
    let tokenLifetime: TimeInterval
    private let key: SymmetricKey
    static let service = "relay-agent"

    public init(mode: Mode, username: String, password: String, tokenLifetime: TimeInterval = 300) {
        self.mode = mode
        self.username = username
        self.password = password
        self.tokenLifetime = tokenLifetime
        key = SymmetricKey(size: .bits256)
    }

    /// Whether the request may read.
    func permits(_ request: HTTPRequest) -> Bool {
        guard let header = request.headerFields[.authorization] else { return false }
        switch mode {
        case .basic: return checkBasic(header)
        case .bearer:
            guard header.lowercased().hasPrefix("bearer ") else { return false }
            return checkToken(String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces))
        }
    }

    /// The `WWW-Authenticate` value for a 401, with the realm on the host the client dialled.
    func challenge(host: String?, scheme: String = "http") -> String {
        switch mode {
        case .basic: return #"Basic realm="relay-agent""#
        case .bearer:
            let authority = host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
            return #"Bearer realm="\#(scheme)://\#(authority)/v2/token",service="\#(Self.service)""#
        }
    }

    /// A token for Basic credentials, or nil when they are wrong.
    func issueToken(for request: HTTPRequest, now: Date = Date()) -> (token: String, expiresIn: Int)? {
        guard mode == .bearer, let header = request.headerFields[.authorization], checkBasic(header) else { return nil }
        let expiry = Int64(now.timeIntervalSince1970 + tokenLifetime)
        return ("\(expiry).\(signature(expiry))", Int(tokenLifetime))
    }

    func checkBasic(_ header: String) -> Bool {
        guard header.lowercased().hasPrefix("basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)) else { return false }
        let expected = Data("\(username):\(password)".utf8)
        // Constant-time: compare digests, whatever the lengths.
        return Data(SHA256.hash(data: decoded)) == Data(SHA256.hash(data: expected)) && decoded.count == expected.count
    }

    func checkToken(_ token: String, now: Date = Date()) -> Bool {
        let parts = token.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let expiry = Int64(parts[0]), Double(expiry) > now.timeIntervalSince1970,
              let given = Data(base64URL: String(parts[1])) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(given, authenticating: Data(String(expiry).utf8), using: key)
    }

    private func signature(_ expiry: Int64) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(String(expiry).utf8), using: key)).base64URL
    }
}

extension Data {
    var base64URL: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    init?(base64URL text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }
}
