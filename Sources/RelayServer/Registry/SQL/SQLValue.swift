import Foundation

/// One value read from or bound into a registry statement, the same for SQLite and
/// PostgreSQL: the registry stores integers, text and bytes only (times as Unix milliseconds,
/// flags as 0/1), which both databases keep without conversion.
public enum SQLValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)
}

/// A Swift value a statement can take as an argument.
public protocol SQLBindable: Sendable {
    var sqlValue: SQLValue { get }
}

/// A Swift value a column can be read as.
public protocol SQLDecodable {
    /// Nil when the stored value cannot be read as this type (the column is named in the error).
    static func decode(_ value: SQLValue) -> Self?
}

extension String: SQLBindable, SQLDecodable {
    public var sqlValue: SQLValue { .text(self) }
    public static func decode(_ value: SQLValue) -> String? {
        switch value {
        case .text(let text): text
        case .blob(let data): String(decoding: data, as: UTF8.self)
        case .integer(let number): String(number)
        default: nil
        }
    }
}

extension Int64: SQLBindable, SQLDecodable {
    public var sqlValue: SQLValue { .integer(self) }
    public static func decode(_ value: SQLValue) -> Int64? {
        switch value {
        case .integer(let number): number
        case .real(let number): Int64(exactly: number.rounded(.towardZero))
        case .text(let text): Int64(text)
        default: nil
        }
    }
}

extension Int: SQLBindable, SQLDecodable {
    public var sqlValue: SQLValue { .integer(Int64(self)) }
    public static func decode(_ value: SQLValue) -> Int? { Int64.decode(value).map { Int(truncatingIfNeeded: $0) } }
}

extension Bool: SQLBindable, SQLDecodable {
    public var sqlValue: SQLValue { .integer(self ? 1 : 0) }
    public static func decode(_ value: SQLValue) -> Bool? { Int64.decode(value).map { $0 != 0 } }
}

extension Double: SQLBindable, SQLDecodable {
    public var sqlValue: SQLValue { .real(self) }
    public static func decode(_ value: SQLValue) -> Double? {
        switch value {
        case .real(let number): number
        case .integer(let number): Double(number)
        default: nil
        }
    }
}

extension Data: SQLBindable, SQLDecodable {
    public var sqlValue: SQLValue { .blob(self) }
    public static func decode(_ value: SQLValue) -> Data? {
        switch value {
        case .blob(let data): data
        case .text(let text): Data(text.utf8)
        default: nil
        }
    }
}

extension Optional: SQLDecodable where Wrapped: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Optional<Wrapped>? {
        if case .null = value { return .some(nil) }
        return Wrapped.decode(value).map { .some($0) }
    }
}

/// A statement's arguments, in the order of its `?` placeholders.
public struct SQLArguments: Sendable, ExpressibleByArrayLiteral {
    public var values: [SQLValue]

    public init(arrayLiteral elements: (any SQLBindable)?...) { self.init(elements) }
    public init(_ elements: [(any SQLBindable)?]) { values = elements.map { $0?.sqlValue ?? .null } }
    public init(values: [SQLValue]) { self.values = values }

    public static func + (left: SQLArguments, right: SQLArguments) -> SQLArguments { SQLArguments(values: left.values + right.values) }
}

/// The column names of one result, shared by its rows.
public final class SQLColumns: Sendable {
    public let names: [String]
    private let indexes: [String: Int]

    public init(_ names: [String]) {
        self.names = names
        var indexes: [String: Int] = [:]
        // The first of two equal names wins, as in SQLite.
        for (index, name) in names.enumerated() where indexes[name.lowercased()] == nil { indexes[name.lowercased()] = index }
        self.indexes = indexes
    }

    func index(of name: String) -> Int? { indexes[name] ?? indexes[name.lowercased()] }
}

/// One result row. Reading a column that is not in the result, or a NULL as a non-optional
/// type, is a programming error (a query that does not match the schema), as in GRDB.
public struct SQLRow: Sendable {
    public let columns: SQLColumns
    public let values: [SQLValue]

    public init(columns: SQLColumns, values: [SQLValue]) {
        self.columns = columns
        self.values = values
    }

    public subscript<T: SQLDecodable>(_ name: String) -> T {
        guard let index = columns.index(of: name) else { preconditionFailure("registry query has no column \(name): \(columns.names)") }
        return self[index]
    }

    public subscript<T: SQLDecodable>(_ index: Int) -> T {
        guard let value = T.decode(values[index]) else {
            preconditionFailure("registry column \(columns.names[index]) holds \(values[index]), not \(T.self)")
        }
        return value
    }
}
