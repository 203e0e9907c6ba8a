import Crypto
import Foundation

/// `sha256:<64 lowercase hex>`: how every artifact, manifest and blob is named.
public struct SHA256Digest: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// The 64 lowercase hex characters.
    public let hex: String

    public init?(_ text: some StringProtocol) {
        guard text.hasPrefix("sha256:") else { return nil }
        let hex = text.dropFirst(7)
        guard hex.utf8.count == 64,
              hex.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) })
        else { return nil }
        self.hex = String(hex)
    }

    public init(of data: Data) { self.init(SHA256.hash(data: data)) }

    public init(_ digest: SHA256.Digest) {
        hex = Self.lowercaseHex(digest)
    }

    /// Lowercase hex of `bytes`. Written out because `String(format: "%02x")` per byte was
    /// 15 % of the relay's CPU in a 10,000-agent fan-out (perf), and no listed library has it.
    public static func lowercaseHex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var characters: [UInt8] = []
        characters.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            characters.append(digits[Int(byte >> 4)])
            characters.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: characters, as: UTF8.self)
    }

    public var description: String { "sha256:" + hex }

    public static func < (lhs: SHA256Digest, rhs: SHA256Digest) -> Bool { lhs.hex < rhs.hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let digest = SHA256Digest(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text.prefix(80))' is not sha256:<64 lowercase hex>"))
        }
        self = digest
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
