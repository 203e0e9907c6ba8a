import Foundation
import Yams

/// Reads a YAML configuration into a `Decodable` type, strictly: unknown fields at any depth
/// are errors, and every error names the field path and, when the document has it, the line
/// and column.
public enum ConfigLoader {
    /// Reads and decodes `path`; the document is returned to locate later (semantic) errors.
    public static func load<T: Decodable>(_ type: T.Type, from path: String) throws(ConfigError) -> (T, ConfigDocument) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, field: "", message: "cannot read the file (does it exist?)")
        }
        return try decode(type, yaml: String(decoding: data, as: UTF8.self), file: path)
    }

    /// Decodes `yaml`; `file` is only the name errors carry.
    public static func decode<T: Decodable>(_ type: T.Type, yaml: String, file: String) throws(ConfigError) -> (T, ConfigDocument) {
        let document: ConfigDocument
        do {
            // As YAMLDecoder does: only `<<` merges are resolved; scalars are typed by the decoded type.
            let parser = try Parser(yaml: yaml, resolver: Resolver.basic.appending(.merge))
            document = ConfigDocument(file: file, root: try withExtendedLifetime(parser) { try parser.singleRoot() } ?? "")
        } catch {
            throw syntaxError(error, file: file)
        }
        let recorder = UnknownKeyRecorder()
        var decoded: T?
        var failure: ConfigError?
        do {
            decoded = try YAMLDecoder().decode(StrictRoot<T>.self, from: document.root, userInfo: [.unknownKeys: recorder]).value
        } catch let error as DecodingError {
            failure = document.describe(error)
        } catch {
            failure = syntaxError(error, file: file)
        }
        // An unknown field is the likelier cause of any other error (`certFlie` → certFile is required).
        if let unknown = document.firstUnknown(recorder) { throw unknown }
        if let failure { throw failure }
        guard let decoded else { throw ConfigError(file: file, field: "", message: "could not be read") }
        return (decoded, document)
    }

    /// A YAML syntax error (or duplicate key) with its line and column.
    static func syntaxError(_ error: any Error, file: String) -> ConfigError {
        func located(_ problem: String, _ context: YamlError.Context?, _ mark: Mark) -> ConfigError {
            let detail = context.map { " (\($0.text) at line \($0.mark.line), column \($0.mark.column))" } ?? ""
            return ConfigError(file: file, field: "", message: "not valid YAML: \(problem)\(detail)", line: mark.line, column: mark.column)
        }
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return located(problem, context, mark)
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigError(file: file, field: "", message: "duplicate key \(duplicates.sorted().map { "'\($0)'" }.joined(separator: ", ")) in one mapping",
                               line: context.mark.line, column: context.mark.column)
        case .reader(let problem, _, _, _):
            return ConfigError(file: file, field: "", message: "not valid YAML text: \(problem)")
        default:
            return ConfigError(file: file, field: "", message: "not valid YAML: \(error)")
        }
    }
}

extension CodingUserInfoKey {
    static let unknownKeys = CodingUserInfoKey(rawValue: "relay.unknownKeys")!
}

/// The top-level value, decoded through `StrictDecoder`.
private struct StrictRoot<T: Decodable>: Decodable {
    let value: T

    init(from decoder: any Decoder) throws {
        guard let recorder = decoder.userInfo[.unknownKeys] as? UnknownKeyRecorder else {
            value = try T(from: decoder)
            return
        }
        value = try T(from: StrictDecoder(inner: decoder, recorder: recorder))
    }
}

/// A parsed configuration file: finds where a field is, to put its line into errors.
public struct ConfigDocument: @unchecked Sendable {
    // @unchecked: `Node` holds only values (its anchors are weak references and unused here).
    public let file: String
    let root: Node

    /// The error with the line and column of its field added, when the field is in the file.
    public func locate(_ error: ConfigError) -> ConfigError {
        guard error.line == nil, let mark = mark(field: error.field) else { return error }
        var located = error
        located.line = mark.line
        located.column = mark.column
        return located
    }

    /// `sources[0].ref` → the mark of that key (or of the value for a list element).
    func mark(field: String) -> Mark? {
        var components: [any CodingKey] = []
        for part in field.split(separator: ".", omittingEmptySubsequences: false) {
            var name = Substring(part)
            var indices: [Int] = []
            while name.hasSuffix("]"), let open = name.lastIndex(of: "["), let index = Int(name[name.index(after: open)..<name.index(before: name.endIndex)]) {
                indices.insert(index, at: 0)
                name = name[..<open]
            }
            if !name.isEmpty { components.append(AnyCodingKey(stringValue: String(name))) }
            components += indices.compactMap { AnyCodingKey(intValue: $0) }
        }
        guard !components.isEmpty else { return nil }
        return mark(of: components)
    }

    /// The mark of the key naming the last path component (or of the node for an index).
    func mark(of path: [any CodingKey]) -> Mark? {
        guard let last = path.last else { return root.mark }
        guard let parent = node(at: path.dropLast()) else { return nil }
        if case .mapping(let mapping) = parent, let pair = Self.pair(last.stringValue, in: mapping) { return pair.key.mark }
        return node(at: path[...])?.mark
    }

    func node(at path: ArraySlice<any CodingKey>) -> Node? {
        var current = root
        for key in path {
            switch current {
            case .mapping(let mapping):
                guard let pair = Self.pair(key.stringValue, in: mapping) else { return nil }
                current = pair.value
            case .sequence(let sequence):
                guard let index = key.intValue, sequence.indices.contains(index) else { return nil }
                current = sequence[index]
            default:
                return nil
            }
        }
        return current
    }

    /// A key of `mapping`, looking into `<<` merges too.
    private static func pair(_ key: String, in mapping: Node.Mapping) -> (key: Node, value: Node)? {
        if let pair = mapping.first(where: { $0.key.string == key }) { return pair }
        for merge in mapping where merge.key.string == "<<" {
            let sources: [Node] = merge.value.sequence.map(Array.init) ?? [merge.value]
            for case .mapping(let nested) in sources {
                if let pair = pair(key, in: nested) { return pair }
            }
        }
        return nil
    }

    /// The first unknown field in document order, with "did you mean".
    func firstUnknown(_ recorder: UnknownKeyRecorder) -> ConfigError? {
        let located = recorder.unknown.map { ($0, mark(of: $0.path + [AnyCodingKey(stringValue: $0.key)])) }
        guard let (unknown, mark) = located.min(by: { ($0.1?.line ?? .max, $0.1?.column ?? .max) < ($1.1?.line ?? .max, $1.1?.column ?? .max) })
        else { return nil }
        let known = recorder.known(at: unknown.path)
        var message = "unknown field"
        if let suggestion = NearestName.suggest(unknown.key, among: known) {
            message += "; did you mean '\(suggestion)'?"
        } else if !known.isEmpty {
            message += "; expected one of: \(known.sorted().joined(separator: ", "))"
        }
        return ConfigError(file: file, field: ConfigPath.joined(unknown.path, unknown.key), message: message,
                           line: mark?.line, column: mark?.column)
    }

    /// A decoding failure naming the field, what was expected and what the file has.
    func describe(_ error: DecodingError) -> ConfigError {
        func at(_ path: [any CodingKey], _ field: String, _ message: String) -> ConfigError {
            let mark = mark(of: path)
            return ConfigError(file: file, field: field, message: message, line: mark?.line, column: mark?.column)
        }
        switch error {
        case .keyNotFound(let key, let context):
            return at(context.codingPath, ConfigPath.joined(context.codingPath, key.stringValue), "is required")
        case .typeMismatch(let type, let context):
            return at(context.codingPath, ConfigPath.text(context.codingPath),
                      "expected \(Self.kind(type)), found \(Self.found(node(at: context.codingPath[...])))")
        case .valueNotFound(let type, let context):
            return at(context.codingPath, ConfigPath.text(context.codingPath), "expected \(Self.kind(type)), found nothing")
        case .dataCorrupted(let context):
            return at(context.codingPath, ConfigPath.text(context.codingPath), context.debugDescription)
        @unknown default:
            return ConfigError(file: file, field: "", message: "\(error)")
        }
    }

    static func kind(_ type: Any.Type) -> String {
        switch type {
        case is Node.Mapping.Type: return "a mapping (key: value lines)"
        case is Node.Sequence.Type: return "a list"
        case is Bool.Type: return "true or false"
        case is String.Type, is Node.Scalar.Type: return "a single value"
        case is any BinaryInteger.Type: return "a whole number"
        case is any BinaryFloatingPoint.Type: return "a number"
        default: return "\(type)"
        }
    }

    static func found(_ node: Node?) -> String {
        switch node {
        case .scalar(let scalar)?: return "'\(scalar.string)'"
        case .mapping?: return "a mapping"
        case .sequence?: return "a list"
        case .alias?, nil: return "something else"
        }
    }
}

/// A configuration file (relay.yaml, agent.yaml): decoded strictly by `ConfigLoader`, then
/// validated into `Resolved`. Semantic errors get the line of their field too.
public protocol ConfigFile: Decodable {
    associatedtype Resolved
    /// The name errors carry when the text has no file of its own.
    static var fileName: String { get }
    /// Validates; relative paths are resolved against `base`; errors name `file`.
    func resolve(file: String, base: URL) throws(ConfigError) -> Resolved
}

extension ConfigFile {
    /// Loads and validates the file; relative paths are resolved against its directory.
    public static func load(path: String) throws(ConfigError) -> Resolved {
        let (config, document) = try ConfigLoader.load(Self.self, from: path)
        do { return try config.resolve(file: path, base: URL(fileURLWithPath: path).deletingLastPathComponent()) } catch {
            throw document.locate(error)
        }
    }

    /// Parses and validates configuration text (no file of its own; e.g. for fuzzing):
    /// relative paths are resolved against `baseDirectory`; `file` is only the name errors
    /// carry. Files the configuration names (certificates, tokens) are still read.
    public static func parse(yaml: String, baseDirectory: URL, file: String = Self.fileName) throws(ConfigError) -> Resolved {
        let (config, document) = try ConfigLoader.decode(Self.self, yaml: yaml, file: file)
        do { return try config.resolve(file: file, base: baseDirectory) } catch { throw document.locate(error) }
    }
}
