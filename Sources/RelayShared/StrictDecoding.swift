import Foundation
import Yams

/// A `Decoder` wrapper that makes every keyed container strict: a key in the document that
/// the decoded type's `CodingKeys` do not know is recorded as an unknown field (with the names
/// the type did ask for, to suggest the nearest one).
///
/// It works for any `Decodable` without per-type lists: a new property (and so a new case of
/// the synthesized `CodingKeys`) is accepted automatically. Dictionaries (`[String: String]`)
/// accept every key, as their coding keys do.
struct StrictDecoder: Decoder {
    let inner: any Decoder
    let recorder: UnknownKeyRecorder

    var codingPath: [any CodingKey] { inner.codingPath }
    var userInfo: [CodingUserInfoKey: Any] { inner.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        let container = try inner.container(keyedBy: Key.self)
        let present = try inner.container(keyedBy: AnyCodingKey.self).allKeys.map(\.stringValue)
        recorder.opened(path: codingPath, unknown: present.filter { Key(stringValue: $0) == nil })
        return KeyedDecodingContainer(StrictKeyedContainer(inner: container, decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        StrictUnkeyedContainer(inner: try inner.unkeyedContainer(), recorder: recorder)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        StrictSingleValueContainer(inner: try inner.singleValueContainer(), decoder: self)
    }

    /// Scalars go straight to the inner decoder (Yams constructs them); everything else is
    /// decoded through a strict decoder so its keyed containers are checked too.
    static func decode<T: Decodable>(_ type: T.Type, scalar: () throws -> T, nested: () throws -> any Decoder,
                                     recorder: UnknownKeyRecorder) throws -> T {
        if type is any ScalarConstructible.Type { return try scalar() }
        return try T(from: StrictDecoder(inner: try nested(), recorder: recorder))
    }
}

struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { self.stringValue = "\(intValue)"; self.intValue = intValue }
}

private struct StrictKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let inner: KeyedDecodingContainer<Key>
    let decoder: StrictDecoder

    var codingPath: [any CodingKey] { inner.codingPath }
    var allKeys: [Key] { inner.allKeys }

    private func asked(_ key: Key) { decoder.recorder.asked(path: codingPath, key: key.stringValue) }

    func contains(_ key: Key) -> Bool {
        asked(key)
        return inner.contains(key)
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        asked(key)
        return try inner.decodeNil(forKey: key)
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        asked(key)
        return try StrictDecoder.decode(type, scalar: { try inner.decode(type, forKey: key) },
                                        nested: { try inner.superDecoder(forKey: key) }, recorder: decoder.recorder)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        asked(key)
        return try StrictDecoder(inner: try inner.superDecoder(forKey: key), recorder: decoder.recorder).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        asked(key)
        return StrictUnkeyedContainer(inner: try inner.nestedUnkeyedContainer(forKey: key), recorder: decoder.recorder)
    }

    func superDecoder() throws -> any Decoder {
        StrictDecoder(inner: try inner.superDecoder(), recorder: decoder.recorder)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        asked(key)
        return StrictDecoder(inner: try inner.superDecoder(forKey: key), recorder: decoder.recorder)
    }
}

private struct StrictUnkeyedContainer: UnkeyedDecodingContainer {
    var inner: any UnkeyedDecodingContainer
    let recorder: UnknownKeyRecorder

    var codingPath: [any CodingKey] { inner.codingPath }
    var count: Int? { inner.count }
    var isAtEnd: Bool { inner.isAtEnd }
    var currentIndex: Int { inner.currentIndex }

    mutating func decodeNil() throws -> Bool { try inner.decodeNil() }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        if type is any ScalarConstructible.Type { return try inner.decode(type) }
        return try T(from: StrictDecoder(inner: try inner.superDecoder(), recorder: recorder))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try StrictDecoder(inner: try inner.superDecoder(), recorder: recorder).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        StrictUnkeyedContainer(inner: try inner.nestedUnkeyedContainer(), recorder: recorder)
    }

    mutating func superDecoder() throws -> any Decoder {
        StrictDecoder(inner: try inner.superDecoder(), recorder: recorder)
    }
}

private struct StrictSingleValueContainer: SingleValueDecodingContainer {
    let inner: any SingleValueDecodingContainer
    let decoder: StrictDecoder

    var codingPath: [any CodingKey] { inner.codingPath }

    func decodeNil() -> Bool { inner.decodeNil() }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try StrictDecoder.decode(type, scalar: { try inner.decode(type) }, nested: { decoder.inner },
                                 recorder: decoder.recorder)
    }
}

/// Collects, per mapping (by coding path), the keys the document has but the type does not
/// know, and the keys the type asked for (the candidates for "did you mean").
final class UnknownKeyRecorder {
    struct Unknown {
        var path: [any CodingKey]
        var key: String
    }

    private(set) var unknown: [Unknown] = []
    private var unknownSeen = Set<String>()
    /// Per mapping: the names asked for, in order, and the same as a set.
    private var askedKeys: [String: (names: [String], seen: Set<String>)] = [:]

    func opened(path: [any CodingKey], unknown keys: [String]) {
        guard !keys.isEmpty else { return }
        let prefix = ConfigPath.text(path)
        for key in keys where unknownSeen.insert("\(prefix)\u{0}\(key)").inserted {
            unknown.append(Unknown(path: path, key: key))
        }
    }

    func asked(path: [any CodingKey], key: String) {
        let text = ConfigPath.text(path)
        if askedKeys[text, default: ([], [])].seen.insert(key).inserted { askedKeys[text]!.names.append(key) }
    }

    /// The names the mapping at `path` accepts, as far as the type asked for them.
    func known(at path: [any CodingKey]) -> [String] { askedKeys[ConfigPath.text(path)]?.names ?? [] }
}

/// Coding paths as written in error messages: `sources[0].ref.branch`.
enum ConfigPath {
    static func text(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue { text += "[\(index)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
        }
        return text
    }

    static func joined(_ parent: [any CodingKey], _ key: String) -> String {
        let prefix = text(parent)
        return prefix.isEmpty ? key : "\(prefix).\(key)"
    }
}

/// "Did you mean": the known name closest to a mistyped one (case-insensitive edit distance,
/// adjacent transpositions count as one edit), if it is close enough to be a typo.
enum NearestName {
    static func suggest(_ name: String, among candidates: [String]) -> String? {
        let scored = candidates.map { ($0, distance(name.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
        let limit = max(2, min(name.count, best.0.count) / 3)
        return best.1 <= limit ? best.0 : nil
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a), y = Array(b)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var table = Array(repeating: Array(repeating: 0, count: y.count + 1), count: x.count + 1)
        for i in 0...x.count { table[i][0] = i }
        for j in 0...y.count { table[0][j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[x.count][y.count]
    }
}
