import Foundation

// Semantic versions and Git tag selection for `GitRepository.spec.ref.semver`.
//
// Flux's source-controller parses tag names with `fluxcd/pkg/version.ParseVersion`, checks them
// against a range parsed by Masterminds semver v3 (`github.com/Masterminds/semver/v3`,
// v3.2.x–v3.3.x), and checks out the highest match. This file reimplements the version half
// of that behaviour (`NewVersion`, `ParseVersion`, `Version.Compare`) and the tag choice;
// `SemVerConstraint.swift` holds the range half. The code is written from the documented and
// tested behaviour, not translated from the Go source.

/// A semantic version, parsed and ordered the way Masterminds semver v3 does it (the library
/// Flux uses for `GitRepository.spec.ref.semver`).
///
/// - Ordering is SemVer 2.0.0 precedence: major, minor, patch numerically; then a version
///   without a pre-release ranks above one with; pre-release identifiers compare dot by dot
///   (numeric below alphanumeric, numbers numerically, text by ASCII), and a shorter list ranks
///   lower when every shared identifier is equal. Build metadata is ignored.
/// - Equality and hashing follow precedence too: `1.2.3+a == 1.2.3+b`, and `v1.0.0 == 1.0.0`.
///   Compare ``original`` or ``metadata`` yourself when the spelling matters.
///
/// One inherited quirk: a numeric pre-release identifier too large for `UInt64` is compared as
/// text, exactly as Masterminds does.
public struct SemanticVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let major: UInt64
    public let minor: UInt64
    public let patch: UInt64
    /// Pre-release identifiers without the leading `-` (`"rc.1"`), or `""` for a release.
    public let prerelease: String
    /// Build metadata without the leading `+`, or `""`.
    public let metadata: String
    /// The text this version was parsed from, exactly as given (keeps a `v` prefix).
    public let original: String

    /// Parses loosely, like Masterminds `NewVersion`.
    ///
    /// Accepts an optional leading `v`, and lets minor and patch be omitted (`"1"`, `"1.2"`,
    /// `"v1.2.3"`, `"1.2-beta.5"` = 1.2.0-beta.5). A pre-release after `-` and build metadata
    /// after `+` are dot-separated, non-empty identifiers of `[0-9A-Za-z-]`; a numeric
    /// pre-release identifier must not have a leading zero. Leading zeros in major, minor
    /// and patch are accepted and dropped (`"01.2.3"` = 1.2.3), as in v3.2.x, v3.3.0 and
    /// v3.4 (only v3.3.1 rejects them). Numbers must fit in `UInt64`. Anything else, such as
    /// surrounding whitespace, `V1.2.3` or `1.2.3.4`, gives `nil`.
    public init?(lenient text: String) {
        guard let parsed = SemVerGrammar.parse(Array(text.utf8), strict: false) else { return nil }
        self.init(parsed, original: text)
    }

    /// Parses a Git tag name the way Flux does (`fluxcd/pkg/version.ParseVersion`).
    ///
    /// That is a strict SemVer 2.0.0 version (`MAJOR.MINOR.PATCH`, no leading zeros, optional
    /// pre-release and build metadata) with at most one leading `v`. So `v1.2.3` and
    /// `1.2.3-rc.1+build.5` parse, while `v1.2`, `1`, `01.2.3`, `vv1.2.3` and `1.2.3.4` do
    /// not: Flux ignores such tags even though a constraint may spell versions loosely.
    public init?(tagName: String) {
        var bytes = Array(tagName.utf8)
        if bytes.first == SemVerBytes.v { bytes.removeFirst() }
        guard let parsed = SemVerGrammar.parse(bytes, strict: true) else { return nil }
        self.init(parsed, original: tagName)
    }

    private init(_ parts: SemVerGrammar.Parts, original: String) {
        major = parts.major
        minor = parts.minor
        patch = parts.patch
        prerelease = parts.prerelease
        metadata = parts.metadata
        self.original = original
    }

    /// Whether this is a pre-release (has a non-empty ``prerelease``).
    public var isPrerelease: Bool { !prerelease.isEmpty }

    /// The normalized form `MAJOR.MINOR.PATCH[-PRERELEASE][+METADATA]`, without any `v`.
    public var description: String {
        var text = "\(major).\(minor).\(patch)"
        if !prerelease.isEmpty { text += "-\(prerelease)" }
        if !metadata.isEmpty { text += "+\(metadata)" }
        return text
    }

    /// Three-way precedence comparison: negative, zero or positive.
    public func precedence(comparedTo other: SemanticVersion) -> Int {
        if major != other.major { return major < other.major ? -1 : 1 }
        if minor != other.minor { return minor < other.minor ? -1 : 1 }
        if patch != other.patch { return patch < other.patch ? -1 : 1 }
        switch (prerelease.isEmpty, other.prerelease.isEmpty) {
        case (true, true): return 0
        case (true, false): return 1
        case (false, true): return -1
        case (false, false): return SemVerPrereleaseOrder.compare(prerelease, other.prerelease)
        }
    }

    public static func < (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        lhs.precedence(comparedTo: rhs) < 0
    }

    /// Precedence equality: metadata and the original spelling are ignored.
    public static func == (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        lhs.precedence(comparedTo: rhs) == 0
    }

    public func hash(into hasher: inout Hasher) {
        // Precedence-equal versions always have identical pre-release text (numbers never
        // compare equal unless their digits are equal, as leading zeros are rejected), so
        // hashing these four fields is consistent with `==`.
        hasher.combine(major)
        hasher.combine(minor)
        hasher.combine(patch)
        hasher.combine(prerelease)
    }
}

/// Pre-release ordering identical to Masterminds `comparePrerelease`.
enum SemVerPrereleaseOrder {
    static func compare(_ lhs: String, _ rhs: String) -> Int {
        let left = lhs.split(separator: ".", omittingEmptySubsequences: false)
        let right = rhs.split(separator: ".", omittingEmptySubsequences: false)
        for index in 0..<max(left.count, right.count) {
            let l = index < left.count ? left[index] : ""
            let r = index < right.count ? right[index] : ""
            let order = compareIdentifier(l, r)
            if order != 0 { return order }
        }
        return 0
    }

    private static func compareIdentifier(_ lhs: Substring, _ rhs: Substring) -> Int {
        if lhs == rhs { return 0 }
        // A missing identifier (the shorter list) ranks lower.
        if lhs.isEmpty { return -1 }
        if rhs.isEmpty { return 1 }
        // "Numeric" means unsigned ASCII digits that fit UInt64; anything else is text.
        switch (numericValue(lhs), numericValue(rhs)) {
        case let (l?, r?): return l < r ? -1 : 1
        case (.some, nil): return -1
        case (nil, .some): return 1
        case (nil, nil): return lhs.utf8.lexicographicallyPrecedes(rhs.utf8) ? -1 : 1
        }
    }

    /// Like Go's `strconv.ParseUint(_, 10, 64)`: digits only (no sign), within `UInt64`.
    private static func numericValue(_ identifier: Substring) -> UInt64? {
        guard identifier.utf8.allSatisfy(SemVerBytes.isDigit) else { return nil }
        return UInt64(identifier)
    }
}

/// A hand-written recogniser for the two version grammars.
///
/// Lenient (Masterminds `NewVersion`): `v? N (.N)? (.N)? (-IDS)? (+IDS)?`.
/// Strict (SemVer 2.0.0, the tag form Flux accepts once one `v` is stripped):
/// `N.N.N (-IDS)? (+IDS)?` with no leading zeros in `N`.
/// In both, `N` is ASCII digits fitting `UInt64` and `IDS` is one or more non-empty
/// `[0-9A-Za-z-]` identifiers joined by dots; numeric pre-release identifiers may not start
/// with `0` unless they are exactly `0`.
enum SemVerGrammar {
    struct Parts {
        var major: UInt64
        var minor: UInt64 = 0
        var patch: UInt64 = 0
        var prerelease = ""
        var metadata = ""
    }

    static func parse(_ bytes: [UInt8], strict: Bool) -> Parts? {
        var cursor = 0
        if !strict, bytes.first == SemVerBytes.v { cursor = 1 }

        func number() -> UInt64? {
            let start = cursor
            while cursor < bytes.count, SemVerBytes.isDigit(bytes[cursor]) { cursor += 1 }
            let digits = bytes[start..<cursor]
            guard !digits.isEmpty else { return nil }
            if strict, digits.count > 1, digits.first == SemVerBytes.zero { return nil }
            return UInt64(String(decoding: digits, as: UTF8.self))
        }

        guard let major = number() else { return nil }
        var parts = Parts(major: major)
        if strict || bytes.semVerByte(at: cursor) == SemVerBytes.dot {
            guard bytes.semVerByte(at: cursor) == SemVerBytes.dot else { return nil }
            cursor += 1
            guard let minor = number() else { return nil }
            parts.minor = minor
            if strict || bytes.semVerByte(at: cursor) == SemVerBytes.dot {
                guard bytes.semVerByte(at: cursor) == SemVerBytes.dot else { return nil }
                cursor += 1
                guard let patch = number() else { return nil }
                parts.patch = patch
            }
        }
        if bytes.semVerByte(at: cursor) == SemVerBytes.hyphen {
            cursor += 1
            guard let identifiers = SemVerIdentifiers.scan(bytes, from: &cursor),
                  SemVerIdentifiers.isValidPrerelease(identifiers) else { return nil }
            parts.prerelease = identifiers
        }
        if bytes.semVerByte(at: cursor) == SemVerBytes.plus {
            cursor += 1
            guard let identifiers = SemVerIdentifiers.scan(bytes, from: &cursor) else { return nil }
            parts.metadata = identifiers
        }
        return cursor == bytes.count ? parts : nil
    }
}

/// Dot-separated `[0-9A-Za-z-]+` identifier lists, shared by versions and constraints.
enum SemVerIdentifiers {
    /// Consumes `ID(.ID)*` greedily; a trailing `.` not followed by an identifier character is
    /// left unconsumed. Returns `nil` if not even one identifier character is present.
    static func scan(_ bytes: [UInt8], from cursor: inout Int) -> String? {
        let start = cursor
        guard let first = bytes.semVerByte(at: cursor), SemVerBytes.isIdentifier(first) else { return nil }
        while true {
            while let byte = bytes.semVerByte(at: cursor), SemVerBytes.isIdentifier(byte) { cursor += 1 }
            guard bytes.semVerByte(at: cursor) == SemVerBytes.dot,
                  let next = bytes.semVerByte(at: cursor + 1), SemVerBytes.isIdentifier(next) else { break }
            cursor += 1
        }
        return String(decoding: bytes[start..<cursor], as: UTF8.self)
    }

    /// Rejects all-digit identifiers with a leading zero (`01`), as SemVer and Masterminds do.
    static func isValidPrerelease(_ text: String) -> Bool {
        text.utf8.split(separator: SemVerBytes.dot).allSatisfy { identifier in
            !(identifier.count > 1 && identifier.first == SemVerBytes.zero
                && identifier.allSatisfy(SemVerBytes.isDigit))
        }
    }
}

/// Byte-level character classes (Go's regexp `\s` is exactly `[\t\n\f\r ]`).
enum SemVerBytes {
    static let v = UInt8(ascii: "v")
    static let zero = UInt8(ascii: "0")
    static let dot = UInt8(ascii: ".")
    static let hyphen = UInt8(ascii: "-")
    static let plus = UInt8(ascii: "+")
    static let comma = UInt8(ascii: ",")
    static let pipe = UInt8(ascii: "|")

    static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }

    static func isIdentifier(_ byte: UInt8) -> Bool {
        isDigit(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            || byte == hyphen
    }

    static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0C || byte == 0x0D
    }
}

extension Array where Element == UInt8 {
    /// The byte at `index`, or `nil` past either end.
    func semVerByte(at index: Int) -> UInt8? { indices.contains(index) ? self[index] : nil }
}

// MARK: - Tag selection

/// A tag offered to ``SemVerTagSelector``, optionally with the committer time of the commit
/// it points at (Flux's tie-breaker).
public struct SemVerTagCandidate: Sendable, Hashable {
    public var name: String
    public var commitTime: Date?

    public init(name: String, commitTime: Date? = nil) {
        self.name = name
        self.commitTime = commitTime
    }
}

/// Picks the tag Flux would check out for `GitRepository.spec.ref.semver`.
public enum SemVerTagSelector {
    /// The highest-precedence tag whose name parses (see ``SemanticVersion/init(tagName:)``)
    /// and satisfies `constraint`, or `nil` if none does.
    ///
    /// Ties (equal precedence, e.g. `v1.0.0` and `1.0.0`, or `1.0.0+a` and `1.0.0+b`) go to
    /// the lexicographically greatest tag name by UTF-8 bytes, so `v1.0.0` beats `1.0.0`.
    /// Flux itself breaks such ties by commit time and otherwise by map order, which is not
    /// deterministic; use the ``SemVerTagCandidate`` overload to supply commit times.
    public static func highestTag(
        matching constraint: SemVerConstraint, among tags: [String]
    ) -> (tag: String, version: SemanticVersion)? {
        highestTag(matching: constraint, among: tags.map { SemVerTagCandidate(name: $0) })
    }

    /// As the `[String]` overload, but ties in precedence go first to the later commit time
    /// (as in Flux; a missing time counts as earliest) and then to the greatest tag name.
    public static func highestTag(
        matching constraint: SemVerConstraint, among candidates: [SemVerTagCandidate]
    ) -> (tag: String, version: SemanticVersion)? {
        var best: (candidate: SemVerTagCandidate, version: SemanticVersion)?
        for candidate in candidates {
            guard let version = SemanticVersion(tagName: candidate.name),
                  constraint.isSatisfied(by: version) else { continue }
            if let current = best, !ranksAbove(candidate, version, current.candidate, current.version) {
                continue
            }
            best = (candidate, version)
        }
        return best.map { ($0.candidate.name, $0.version) }
    }

    private static func ranksAbove(
        _ candidate: SemVerTagCandidate, _ version: SemanticVersion,
        _ other: SemVerTagCandidate, _ otherVersion: SemanticVersion
    ) -> Bool {
        let order = version.precedence(comparedTo: otherVersion)
        if order != 0 { return order > 0 }
        let time = candidate.commitTime ?? .distantPast
        let otherTime = other.commitTime ?? .distantPast
        if time != otherTime { return time > otherTime }
        return other.name.utf8.lexicographicallyPrecedes(candidate.name.utf8)
    }
}
