// Version ranges with the semantics of Masterminds semver v3 `NewConstraint` / `Check`
// (github.com/Masterminds/semver/v3, v3.2.x–v3.3.x), which Flux's source-controller uses for
// `GitRepository.spec.ref.semver`. Written from the library's documented and tested
// behaviour; see `SemVer.swift` for versions and tag selection.

/// Why a constraint string was rejected.
public struct SemVerConstraintError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Reason: Sendable, Equatable {
        /// An `||` alternative does not have the shape `op version[(, | space) op version…]`.
        case malformed
        /// A comparator has the right shape but its version does not parse (e.g. `1|2`, `xx`).
        case invalidVersion
    }

    /// The complete constraint text that was given.
    public let constraint: String
    /// The offending part: the `||` alternative (after hyphen ranges were rewritten) for
    /// ``Reason/malformed``, or the single comparator for ``Reason/invalidVersion``.
    public let part: String
    public let reason: Reason

    public var description: String {
        switch reason {
        case .malformed: "improper constraint: \(part)"
        case .invalidVersion: "improper constraint: \(part) (its version does not parse)"
        }
    }
}

/// A version range such as `>=1.2.0 <2.0.0 || ^3`, with the semantics of Masterminds semver v3
/// as used by Flux for `GitRepository.spec.ref.semver`.
///
/// Syntax:
/// - `||` separates alternatives; inside one, comparators separated by commas and/or spaces
///   must all hold.
/// - `A - B` (spaces around `-` required) means `>= A, <= B`; without spaces, `1.2-3` is the
///   version 1.2.0-3.
/// - Operators: none or `=`, `!=`, `>`, `<`, `>=`/`=>`, `<=`/`=<`, `~`/`~>`, `^`; whitespace may
///   follow the operator; versions may start with `v` and omit minor/patch; `x`, `X` and `*`
///   are wildcards.
/// - The empty string is rejected, as by `NewConstraint` (its "empty means `*`" branch is
///   unreachable there).
///
/// A missing or wildcard part makes the comparator "dirty": `*`/`x.…` becomes 0.0.0, `1`/`1.x`
/// becomes 1.0.0 with a wildcard minor, `1.2`/`1.2.x` becomes 1.2.0 with a wildcard patch.
/// Per operator (a bound B, version V):
/// - none/`=`: exact equality unless dirty, in which case it acts as `~`.
/// - `!=`: inequality; dirty forms exclude the whole wildcard range (`!=1.2.x`).
/// - `>`: `>11` needs major > 11; `>11.1` needs a greater major or the same major and minor > 1.
/// - `<`, `>=`: plain comparison with B (wildcards ignored, so `<1.x` means `<1.0.0`).
/// - `<=`: dirty forms compare only the given parts (`<=1.2` accepts 1.2.9, `<=1` 1.9.9).
/// - `~`: `~1.2.3` = >=1.2.3 <1.3.0; `~1.2` likewise; `~1` = >=1.0.0 <2.0.0; `~0.0.0` and `~*`
///   match everything.
/// - `^`: `^1.2.3` = >=1.2.3 <2.0.0; `^0.2.3` = >=0.2.3 <0.3.0; `^0.0.3` = 0.0.3 only;
///   `^0.0` = <0.1.0; `^0` = <1.0.0. (`^*` matches only 0.0.0, a Masterminds quirk.)
///
/// Pre-releases: see ``PrereleasePolicy``. Under the default, a pre-release version satisfies a
/// comparator only if the comparator's own version has a pre-release, so `>=1.0.0` never
/// matches `1.1.0-rc.1` while `>=1.0.0-0` does.
public struct SemVerConstraint: Sendable, CustomStringConvertible {
    /// When a pre-release version may satisfy a comparator.
    public enum PrereleasePolicy: Sendable, Equatable {
        /// Masterminds v3.2.x–v3.3.x: each comparator separately must carry a pre-release
        /// (for `!=`, only wildcard forms check this). So `>=1.0.0-0 <2.0.0` rejects
        /// `1.1.0-rc.1`, because `<2.0.0` has no pre-release.
        case perComparator
        /// Masterminds v3.4+: one comparator with a pre-release opens the whole
        /// `||` alternative (including `!=`), so `>=1.0.0-0 <2.0.0` accepts `1.1.0-rc.1`.
        case perAlternative
    }

    /// The text as given to ``init(_:prereleasePolicy:)``.
    public let text: String
    public let prereleasePolicy: PrereleasePolicy
    /// `||` alternatives, each a list of comparators that must all hold.
    let alternatives: [[SemVerComparator]]

    /// Parses `text` like Masterminds `NewConstraint`.
    /// - Throws: ``SemVerConstraintError`` naming the part that does not parse.
    public init(_ text: String, prereleasePolicy: PrereleasePolicy = .perComparator) throws {
        self.text = text
        self.prereleasePolicy = prereleasePolicy
        let rewritten = SemVerConstraintSyntax.rewritingHyphenRanges(Array(text.utf8))
        alternatives = try SemVerConstraintSyntax.splitAlternatives(rewritten).map { alternative in
            guard let tokens = SemVerConstraintSyntax.comparatorTokens(alternative) else {
                throw SemVerConstraintError(
                    constraint: text, part: String(decoding: alternative, as: UTF8.self),
                    reason: .malformed)
            }
            return try tokens.map { token in
                guard let comparator = SemVerComparator(token) else {
                    throw SemVerConstraintError(
                        constraint: text, part: token.operatorText + token.version.text,
                        reason: .invalidVersion)
                }
                return comparator
            }
        }
    }

    /// Whether `version` satisfies at least one alternative.
    public func isSatisfied(by version: SemanticVersion) -> Bool {
        alternatives.contains { comparators in
            let alternativeHasPrerelease = comparators.contains { $0.bound.isPrerelease }
            return comparators.allSatisfy { comparator in
                if version.isPrerelease {
                    switch prereleasePolicy {
                    case .perComparator:
                        if comparator.screensPrereleases, !comparator.bound.isPrerelease { return false }
                    case .perAlternative:
                        if !alternativeHasPrerelease { return false }
                    }
                }
                return comparator.contains(version)
            }
        }
    }

    /// The normalized form Masterminds prints: comparators as `op version`, space-separated,
    /// alternatives joined by ` || ` (hyphen ranges appear rewritten).
    public var description: String {
        alternatives
            .map { $0.map { $0.operatorText + $0.writtenVersion }.joined(separator: " ") }
            .joined(separator: " || ")
    }
}

/// One `op version` comparator.
struct SemVerComparator: Sendable {
    enum Operation: Sendable {
        case equalOrTilde, notEqual, greater, less, greaterOrEqual, lessOrEqual, tilde, caret
    }

    /// Which part is the first missing or wildcard one.
    enum Wildcard: Sendable {
        case exact, major, minor, patch
    }

    let operatorText: String
    /// The version as written (with any `v`, wildcards and metadata).
    let writtenVersion: String
    let operation: Operation
    let wildcard: Wildcard
    /// The concrete version compared against: wildcards become 0, metadata is dropped.
    let bound: SemanticVersion

    init?(_ token: SemVerConstraintSyntax.Token) {
        guard let operation = Self.operations[token.operatorText] else { return nil }
        let parts = token.version
        let prerelease = parts.prerelease.map { "-" + $0 } ?? ""
        let boundText: String
        if Self.isWild(parts.major) {
            (wildcard, boundText) = (.major, "0.0.0" + prerelease)
        } else if let minor = parts.minor, !Self.isWild(minor) {
            if let patch = parts.patch, !Self.isWild(patch) {
                (wildcard, boundText) = (.exact, parts.text)
            } else {
                (wildcard, boundText) = (.patch, "\(parts.major).\(minor).0" + prerelease)
            }
        } else {
            (wildcard, boundText) = (.minor, "\(parts.major).0.0" + prerelease)
        }
        guard let bound = SemanticVersion(lenient: boundText) else { return nil }
        self.bound = bound
        self.operation = operation
        self.operatorText = token.operatorText
        self.writtenVersion = parts.text
    }

    private static let operations: [String: Operation] = [
        "": .equalOrTilde, "=": .equalOrTilde, "!=": .notEqual, ">": .greater, "<": .less,
        ">=": .greaterOrEqual, "=>": .greaterOrEqual, "<=": .lessOrEqual, "=<": .lessOrEqual,
        "~": .tilde, "~>": .tilde, "^": .caret,
    ]

    private static func isWild(_ part: String) -> Bool { part == "x" || part == "X" || part == "*" }

    /// Whether the per-comparator pre-release rule applies (Masterminds only checks `!=` when
    /// it has a wildcard).
    var screensPrereleases: Bool { operation != .notEqual || wildcard != .exact }

    /// The range test proper, after the pre-release screening.
    func contains(_ v: SemanticVersion) -> Bool {
        let b = bound
        switch operation {
        case .equalOrTilde:
            return wildcard == .exact ? v == b : tildeContains(v)
        case .tilde:
            return tildeContains(v)
        case .notEqual:
            switch wildcard {
            case .exact: return v != b
            // `!=1.x`: any other major.
            case .minor: return v.major != b.major
            // `!=1.2.x`: any other major.minor; within it only a different pre-release.
            case .patch: return v.major != b.major || v.minor != b.minor || v.prerelease != b.prerelease
            // `!=*` excludes only its bound, 0.0.0 (upstream falls through to plain `!=`).
            case .major: return v != b
            }
        case .greater:
            switch wildcard {
            case .exact, .major: return v > b
            case .minor: return v.major > b.major
            case .patch: return v.major > b.major || (v.major == b.major && v.minor > b.minor)
            }
        case .less:
            return v < b
        case .greaterOrEqual:
            return v >= b
        case .lessOrEqual:
            if wildcard == .exact { return v <= b }
            if v.major > b.major { return false }
            return !(v.major == b.major && v.minor > b.minor && wildcard != .minor)
        case .caret:
            return caretContains(v)
        }
    }

    private func tildeContains(_ v: SemanticVersion) -> Bool {
        let b = bound
        if v < b { return false }
        // `~0.0.0` and `~*` (but not `~0`/`~0.0`) accept everything above the bound.
        if b.major == 0, b.minor == 0, b.patch == 0, wildcard == .exact || wildcard == .major {
            return true
        }
        if v.major != b.major { return false }
        return wildcard == .minor || v.minor == b.minor
    }

    private func caretContains(_ v: SemanticVersion) -> Bool {
        let b = bound
        if v < b { return false }
        if b.major > 0 || wildcard == .minor { return v.major == b.major }
        if v.major > 0 { return false }
        if b.minor > 0 || wildcard == .patch { return v.minor == b.minor }
        if v.minor > 0 { return false }
        return v.patch == b.patch
    }
}

/// The textual layer of `NewConstraint`, as a hand-written scanner over UTF-8 bytes.
///
/// Grammar of one `||` alternative (`\s` = space, tab, LF, FF, CR):
///
///     alternative := \s* comparator (separator comparator)* \s*
///     separator   := \s+ | \s* "," \s*
///     comparator  := op \s* version
///     op          := "" | "=" | "!=" | ">" | "<" | ">=" | "=>" | "<=" | "=<" | "~" | "~>" | "^"
///     version     := "v"? N ("." N ("." N)?)? ("-" IDS)? ("+" IDS)?
///     N           := [0-9xX*|]+        (the `|` is accepted here and fails later, as upstream)
///
/// Every choice is decided by the next byte, so greedy scanning finds exactly the matches the
/// upstream regular expressions find.
enum SemVerConstraintSyntax {
    /// A version as written in a constraint, split into its parts.
    struct VersionParts: Sendable {
        var text: String
        var major: String
        var minor: String?
        var patch: String?
        var prerelease: String?
    }

    struct Token: Sendable {
        var operatorText: String
        var version: VersionParts
    }

    /// Rewrites every `A - B` into `>= A, <= B`, swallowing the whitespace around it, and
    /// replaces matches one after another at their first occurrence, as upstream does.
    static func rewritingHyphenRanges(_ bytes: [UInt8]) -> [UInt8] {
        var matches: [(found: [UInt8], replacement: [UInt8])] = []
        var start = 0
        while start < bytes.count {
            guard let (end, low, high) = hyphenRange(in: bytes, at: start) else {
                start += 1
                continue
            }
            matches.append((Array(bytes[start..<end]), Array(">= \(low), <= \(high)".utf8)))
            start = end
        }
        var result = bytes
        for match in matches {
            guard let index = firstIndex(of: match.found, in: result) else { continue }
            result.replaceSubrange(index..<(index + match.found.count), with: match.replacement)
        }
        return result
    }

    /// Matches `\s* version \s+ "-" \s+ version \s*` starting exactly at `start`.
    private static func hyphenRange(in bytes: [UInt8], at start: Int) -> (Int, String, String)? {
        var cursor = start
        skipSpaces(bytes, &cursor)
        guard let low = version(bytes, &cursor) else { return nil }
        guard skipSpaces(bytes, &cursor) > 0, bytes.semVerByte(at: cursor) == SemVerBytes.hyphen else { return nil }
        cursor += 1
        guard skipSpaces(bytes, &cursor) > 0, let high = version(bytes, &cursor) else { return nil }
        skipSpaces(bytes, &cursor)
        return (cursor, low.text, high.text)
    }

    /// Splits on `||` left to right, like Go's `strings.Split`.
    static func splitAlternatives(_ bytes: [UInt8]) -> [[UInt8]] {
        var pieces: [[UInt8]] = []
        var pieceStart = 0
        var cursor = 0
        while cursor + 1 < bytes.count {
            if bytes[cursor] == SemVerBytes.pipe, bytes[cursor + 1] == SemVerBytes.pipe {
                pieces.append(Array(bytes[pieceStart..<cursor]))
                cursor += 2
                pieceStart = cursor
            } else {
                cursor += 1
            }
        }
        pieces.append(Array(bytes[pieceStart...]))
        return pieces
    }

    /// The comparators of one alternative, or `nil` if it does not fit the grammar.
    static func comparatorTokens(_ bytes: [UInt8]) -> [Token]? {
        var tokens: [Token] = []
        var cursor = 0
        skipSpaces(bytes, &cursor)
        while true {
            let op = operatorText(bytes, &cursor)
            skipSpaces(bytes, &cursor)
            guard let parts = version(bytes, &cursor) else { return nil }
            tokens.append(Token(operatorText: op, version: parts))
            let spaces = skipSpaces(bytes, &cursor)
            guard let next = bytes.semVerByte(at: cursor) else { return tokens }
            if next == SemVerBytes.comma {
                cursor += 1
                skipSpaces(bytes, &cursor)
            } else if spaces == 0 {
                return nil
            }
        }
    }

    /// Consumes the operator at `cursor`; the empty operator when none is there. Longest
    /// match is right: no version starts with `=`, `<` or `>`, so a shorter reading of a
    /// two-byte operator could never be followed by a version.
    private static func operatorText(_ bytes: [UInt8], _ cursor: inout Int) -> String {
        guard let first = bytes.semVerByte(at: cursor) else { return "" }
        let pair = String(decoding: [first] + (bytes.semVerByte(at: cursor + 1).map { [$0] } ?? []), as: UTF8.self)
        let op: String
        if ["!=", ">=", "<=", "=>", "=<", "~>"].contains(pair) {
            op = pair
        } else if [">", "<", "=", "~", "^"].contains(String(decoding: [first], as: UTF8.self)) {
            op = String(decoding: [first], as: UTF8.self)
        } else {
            op = ""  // includes a lone `!`, after which the version scan fails
        }
        cursor += op.utf8.count
        return op
    }

    /// Consumes a constraint version greedily, or returns `nil` without a major part.
    private static func version(_ bytes: [UInt8], _ cursor: inout Int) -> VersionParts? {
        let start = cursor
        var scan = cursor
        if bytes.semVerByte(at: scan) == SemVerBytes.v { scan += 1 }
        guard let major = numberPart(bytes, &scan) else { return nil }
        var parts = VersionParts(text: "", major: major)
        if let minor = dottedNumberPart(bytes, &scan) {
            parts.minor = minor
            parts.patch = dottedNumberPart(bytes, &scan)
        }
        if bytes.semVerByte(at: scan) == SemVerBytes.hyphen {
            var next = scan + 1
            if let identifiers = SemVerIdentifiers.scan(bytes, from: &next) {
                parts.prerelease = identifiers
                scan = next
            }
        }
        if bytes.semVerByte(at: scan) == SemVerBytes.plus {
            var next = scan + 1
            if SemVerIdentifiers.scan(bytes, from: &next) != nil { scan = next }
        }
        parts.text = String(decoding: bytes[start..<scan], as: UTF8.self)
        cursor = scan
        return parts
    }

    private static func numberPart(_ bytes: [UInt8], _ cursor: inout Int) -> String? {
        let start = cursor
        while let byte = bytes.semVerByte(at: cursor), isNumberByte(byte) { cursor += 1 }
        return cursor > start ? String(decoding: bytes[start..<cursor], as: UTF8.self) : nil
    }

    /// `"." N`, consumed only if both are present.
    private static func dottedNumberPart(_ bytes: [UInt8], _ cursor: inout Int) -> String? {
        guard bytes.semVerByte(at: cursor) == SemVerBytes.dot else { return nil }
        var next = cursor + 1
        guard let part = numberPart(bytes, &next) else { return nil }
        cursor = next
        return part
    }

    private static func isNumberByte(_ byte: UInt8) -> Bool {
        SemVerBytes.isDigit(byte) || byte == UInt8(ascii: "x") || byte == UInt8(ascii: "X")
            || byte == UInt8(ascii: "*") || byte == SemVerBytes.pipe
    }

    /// Skips whitespace and returns how many bytes were skipped.
    @discardableResult
    private static func skipSpaces(_ bytes: [UInt8], _ cursor: inout Int) -> Int {
        let start = cursor
        while let byte = bytes.semVerByte(at: cursor), SemVerBytes.isSpace(byte) { cursor += 1 }
        return cursor - start
    }

    private static func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard !needle.isEmpty, needle.count <= haystack.count else { return nil }
        return (0...(haystack.count - needle.count)).first { offset in
            haystack[offset..<(offset + needle.count)].elementsEqual(needle)
        }
    }
}
