import Crypto
import Foundation
import Yams

/// A configuration problem, naming the field (`sources[1].url`), where it is in the file when
/// known (line and column, 1-based) and what to do.
public struct ConfigError: Error, Sendable, CustomStringConvertible, Equatable {
    public var file: String
    public var field: String
    public var message: String
    public var line: Int?
    public var column: Int?

    public init(file: String, field: String, message: String, line: Int? = nil, column: Int? = nil) {
        self.file = file
        self.field = field
        self.message = message
        self.line = line
        self.column = column
    }

    /// `relay.yaml:7:5: sources[0].reff: unknown field; did you mean 'ref'?`
    public var description: String {
        var location = file
        if let line { location += ":\(line)" + (column.map { ":\($0)" } ?? "") }
        return field.isEmpty ? "\(location): \(message)" : "\(location): \(field): \(message)"
    }
}

/// A duration written as `500ms`, `30s`, `1m`, `1h30m`, `30d` or a plain number of seconds.
public struct ConfigDuration: Sendable, Hashable, Codable, CustomStringConvertible {
    public var duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed), seconds >= 0 {
            // Beyond Int64 milliseconds (about 292 million years), `inf` included: not a duration.
            guard let milliseconds = Int64(exactly: (seconds * 1000).rounded(.towardZero)) else { return nil }
            duration = .milliseconds(milliseconds)
            return
        }
        var total: Int64 = 0
        var number = ""
        var scanner = Substring(trimmed)
        guard !scanner.isEmpty else { return nil }
        while let character = scanner.first {
            if character.isNumber {
                number.append(character)
                scanner = scanner.dropFirst()
                continue
            }
            guard let value = Int64(number) else { return nil }
            let unit: Int64
            if scanner.hasPrefix("ms") { unit = 1; scanner = scanner.dropFirst(2) }
            else if scanner.hasPrefix("s") { unit = 1000; scanner = scanner.dropFirst() }
            else if scanner.hasPrefix("m") { unit = 60_000; scanner = scanner.dropFirst() }
            else if scanner.hasPrefix("h") { unit = 3_600_000; scanner = scanner.dropFirst() }
            else if scanner.hasPrefix("d") { unit = 86_400_000; scanner = scanner.dropFirst() }
            else { return nil }
            let (part, overflow) = value.multipliedReportingOverflow(by: unit)
            let (sum, overflowSum) = total.addingReportingOverflow(part)
            guard !overflow, !overflowSum else { return nil }
            total = sum
            number = ""
        }
        guard number.isEmpty else { return nil }
        duration = .milliseconds(total)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let parsed = ConfigDuration(parsing: text) else {
            throw DecodingError.dataCorruptedError(in: container,
                debugDescription: "'\(text)' is not a duration; write e.g. 500ms, 30s, 1m, 1h30m, 30d")
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public var milliseconds: Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    public var description: String { "\(milliseconds)ms" }
}

/// Bearer tokens: only their SHA-256 is stored; comparison takes the same time whatever
/// the input.
public enum TokenHash {
    public static func sha256Hex(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Constant-time equality of two equal-length hex digests.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<x.count { difference |= x[i] ^ y[i] }
        return difference == 0
    }

    /// Reads a token file (surrounding whitespace ignored).
    public static func readToken(file: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ConfigError(file: file, field: "", message: "cannot read the token file")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw ConfigError(file: file, field: "", message: "the token file is empty") }
        return token
    }

    /// A new random token (256 bits, URL-safe base64 without padding).
    public static func generate() -> String {
        let key = SymmetricKey(size: .bits256)
        let data = key.withUnsafeBytes { Data($0) }
        return data.base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// `host:port` as written in the configuration files.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port` or `:port` (all interfaces).
    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let colon = trimmed.lastIndex(of: ":"), let port = Int(trimmed[trimmed.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(trimmed[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
