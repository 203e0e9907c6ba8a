// One gitignore-style pattern, as Flux reads it.
//
// This follows fluxcd/pkg `sourceignore/gitignore/pattern.go` (a fork of go-git's
// `plumbing/format/gitignore`, v5.16.4) and `sourceignore.ReadPatterns`, including the places
// where that code differs from real git. Everything is done on UTF-8 bytes, as Go does:
// path components and domains compare byte for byte (Swift's `==` on `String` would treat
// NFC and NFD spellings as equal, Go does not).

/// The outcome of testing one path against one ``IgnorePattern`` (go-git's `MatchResult`).
public enum IgnoreMatchResult: Sendable, Equatable {
    /// The pattern says nothing about the path; a lower-priority pattern decides.
    case noMatch
    /// The path matches a normal pattern: leave it out of the artifact.
    case exclude
    /// The path matches a `!` pattern: keep it, whatever lower-priority patterns say.
    case include
}

/// A single `.sourceignore` / `spec.ignore` pattern with the directory it is scoped to.
///
/// Parsing (`ParsePattern` in Flux):
/// 1. A leading `!` makes it an inclusion (negation); the `!` is removed.
/// 2. Trailing ASCII spaces are removed, unless the text ends with `\ ` (then nothing is
///    trimmed at all; the `\ ` stays and `filepath.Match` reads it as a literal space).
/// 3. A trailing `/` makes it directory-only; the `/` is removed.
/// 4. If a `/` is still present the pattern is *anchored* (go-git calls it a glob): it is
///    matched from the start of the path below its domain. Otherwise it is compared with every
///    path component at any depth.
/// 5. The text is split on `/` (a leading `/` gives an empty first segment).
///
/// Nothing else is special: there is no `\#` or `\!` unescaping, and leading spaces are kept.
public struct IgnorePattern: Sendable, Hashable, CustomStringConvertible {
    /// The pattern exactly as given (one line of an ignore file), before any trimming.
    public let line: String
    /// Path components of the directory the pattern is scoped to, relative to the repository
    /// root: `[]` for the root (defaults, `spec.ignore`, the root `.sourceignore`), `["a", "b"]`
    /// for patterns read from `a/b/.sourceignore`.
    public let domain: [String]
    /// `true` for a `!pattern` (a match re-includes the path).
    public let isInclusion: Bool
    /// `true` when the pattern ended in `/`.
    public let isDirectoryOnly: Bool
    /// `true` when the pattern (after removing a trailing `/`) contains a `/`, so it is matched
    /// from the start of its domain rather than against any single component.
    public let isAnchored: Bool

    let lineBytes: [UInt8]
    let domainBytes: [[UInt8]]
    let segmentBytes: [[UInt8]]

    /// The pattern text split on `/`, after the `!`, trailing-space and trailing-`/` handling.
    public var segments: [String] {
        segmentBytes.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Parses one pattern (Flux's `gitignore.ParsePattern(line, domain)`).
    ///
    /// Comment and blank-line handling belongs to the file reader (``parse(_:domain:)``), not
    /// here: `IgnorePattern(line: "#x", domain: [])` is the literal name pattern `#x`.
    public init(line: String, domain: [String] = []) {
        self.init(lineBytes: Array(line.utf8), domain: domain)
    }

    /// Byte-level form of ``init(line:domain:)`` for raw ignore-file text.
    public init(lineBytes: [UInt8], domain: [String] = []) {
        self.lineBytes = lineBytes
        self.line = String(decoding: lineBytes, as: UTF8.self)
        self.domain = domain
        self.domainBytes = domain.map { Array($0.utf8) }

        var text = lineBytes[...]
        var inclusion = false
        if text.first == UInt8(ascii: "!") {
            inclusion = true
            text = text.dropFirst()
        }
        let space = UInt8(ascii: " ")
        let escapedSpace = text.count >= 2
            && text[text.endIndex - 2] == UInt8(ascii: "\\")
            && text[text.endIndex - 1] == space
        if !escapedSpace {
            while text.last == space { text = text.dropLast() }
        }
        var directoryOnly = false
        if text.last == GlobMatch.separator {
            directoryOnly = true
            text = text.dropLast()
        }
        self.isInclusion = inclusion
        self.isDirectoryOnly = directoryOnly
        self.isAnchored = text.contains(GlobMatch.separator)
        self.segmentBytes = text
            .split(separator: GlobMatch.separator, omittingEmptySubsequences: false)
            .map { Array($0) }
    }

    // MARK: Matching

    /// Tests a path (components relative to the repository root) against this pattern
    /// (go-git's `pattern.Match`).
    ///
    /// - The path must be strictly longer than the domain and start with it; otherwise
    ///   ``IgnoreMatchResult/noMatch``. (So a pattern never applies to its own domain
    ///   directory, and the root `[]` never matches anything.)
    /// - A non-anchored pattern matches when *any* remaining component matches it; with
    ///   directory-only, a match on the *last* component needs `isDirectory`, while a match
    ///   on an earlier component (necessarily a directory) always counts. Hence `*.png`
    ///   also excludes everything inside a directory named `x.png`.
    /// - An anchored pattern is matched segment by segment from the start (see the
    ///   comments in the implementation for the `**` rules and the quirks kept from Go).
    ///
    /// `isDirectory` only matters for directory-only patterns.
    public func match(_ path: [String], isDirectory: Bool) -> IgnoreMatchResult {
        match(bytes: path.map { Array($0.utf8) }, isDirectory: isDirectory)
    }

    /// `match` on pre-converted UTF-8 components (used by ``IgnoreRules`` to convert once).
    func match(bytes path: [[UInt8]], isDirectory: Bool) -> IgnoreMatchResult {
        guard path.count > domainBytes.count else { return .noMatch }
        for (index, component) in domainBytes.enumerated() where path[index] != component {
            return .noMatch
        }
        let rest = path[domainBytes.count...]
        let matched = isAnchored
            ? anchoredMatch(rest, isDirectory: isDirectory)
            : nameMatch(rest, isDirectory: isDirectory)
        guard matched else { return .noMatch }
        return isInclusion ? .include : .exclude
    }

    /// go-git `simpleNameMatch`: the single segment against each component in turn.
    private func nameMatch(_ path: ArraySlice<[UInt8]>, isDirectory: Bool) -> Bool {
        let pattern = segmentBytes[0][...]
        for index in path.indices {
            do {
                guard try GlobMatch.matchBytes(pattern, path[index][...]) else { continue }
            } catch {
                return false
            }
            if isDirectoryOnly && !isDirectory && index == path.endIndex - 1 {
                return false
            }
            return true
        }
        return false
    }

    /// go-git `globMatch`, reproduced step for step:
    ///
    /// - an empty segment (from a leading `/` or `//`) is skipped and cancels a pending `**`;
    /// - `**` as a non-final segment lets the next segment match at the first later component
    ///   that fits (greedy, no backtracking: `**/a/b` does not match `a/x/a/b`);
    /// - `**` as the final segment just stops; whatever was matched so far decides. So `a/**`
    ///   matches `a` itself and `/**` alone matches nothing;
    /// - a segment that contains `**` but is not exactly `**` never matches;
    /// - components left over once the pattern is used up do not matter, so `deploy/` or
    ///   `a/b` also exclude everything below `deploy` or `a/b`;
    /// - directory-only is enforced only when the pattern consumed the whole path.
    private func anchoredMatch(_ path: ArraySlice<[UInt8]>, isDirectory: Bool) -> Bool {
        var path = path
        var matched = false
        var canTraverse = false
        let doubleStar: [UInt8] = [UInt8(ascii: "*"), UInt8(ascii: "*")]
        for (index, segment) in segmentBytes.enumerated() {
            if segment.isEmpty {
                canTraverse = false
                continue
            }
            if segment == doubleStar {
                if index == segmentBytes.count - 1 { break }
                canTraverse = true
                continue
            }
            if Self.containsDoubleStar(segment) {
                return false
            }
            if path.isEmpty {
                return false
            }
            if canTraverse {
                canTraverse = false
                while let component = path.first {
                    path = path.dropFirst()
                    do {
                        if try GlobMatch.matchBytes(segment[...], component[...]) {
                            matched = true
                            break
                        } else if path.isEmpty {
                            matched = false
                        }
                    } catch {
                        return false
                    }
                }
            } else {
                do {
                    guard try GlobMatch.matchBytes(segment[...], path[path.startIndex][...]) else {
                        return false
                    }
                } catch {
                    return false
                }
                matched = true
                path = path.dropFirst()
            }
        }
        if matched && isDirectoryOnly && !isDirectory && path.isEmpty {
            matched = false
        }
        return matched
    }

    private static func containsDoubleStar(_ bytes: [UInt8]) -> Bool {
        let star = UInt8(ascii: "*")
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == star && previous == star { return true }
            previous = byte
        }
        return false
    }

    // MARK: Reading ignore files

    /// Go's `bufio.MaxScanTokenSize`: `bufio.Scanner` gives up on a line of this many bytes or
    /// more (not counting its `\n`), and Flux's `ReadPatterns` silently keeps only the patterns
    /// read before it.
    public static let maxLineLength = 64 * 1024

    /// Reads an ignore file (Flux's `sourceignore.ReadPatterns(reader, domain)`).
    ///
    /// - Lines are split as Go's `bufio.ScanLines` does: on `\n`, with one trailing `\r`
    ///   removed from each line; a final line without `\n` counts; no empty line is produced
    ///   after a final `\n`.
    /// - A line whose very first byte is `#` is a comment. `  # x` (leading blanks) is a
    ///   pattern, not a comment.
    /// - A line that is empty after trimming Unicode white space (Go's `strings.TrimSpace`)
    ///   is skipped.
    /// - Every other line becomes an ``IgnorePattern`` with `domain`, untrimmed
    ///   (``init(line:domain:)`` does its own trailing-space handling).
    /// - As in Go, reading stops at the first line of ``maxLineLength`` bytes or more; the
    ///   patterns before it are kept.
    public static func parse(_ text: String, domain: [String] = []) -> [IgnorePattern] {
        parse(bytes: Array(text.utf8), domain: domain)
    }

    /// Byte-level form of ``parse(_:domain:)``, for ignore-file contents as stored (Go keeps
    /// invalid UTF-8 as is, and so does this).
    public static func parse(bytes: [UInt8], domain: [String] = []) -> [IgnorePattern] {
        var patterns: [IgnorePattern] = []
        for line in scanLines(bytes) {
            if line.first == UInt8(ascii: "#") { continue }
            if isBlank(line) { continue }
            patterns.append(IgnorePattern(lineBytes: Array(line), domain: domain))
        }
        return patterns
    }

    /// The lines `bufio.Scanner` with `ScanLines` yields for `bytes`.
    static func scanLines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        let newline = UInt8(ascii: "\n")
        let carriageReturn = UInt8(ascii: "\r")
        var lines: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex
        while start < bytes.endIndex {
            let end = bytes[start...].firstIndex(of: newline) ?? bytes.endIndex
            // The scanner's buffer tops out at maxLineLength bytes, and the line plus its
            // newline (or, at end of input, the line alone before EOF is seen) must fit in it.
            if end - start >= maxLineLength { break }
            var line = bytes[start..<end]
            if line.last == carriageReturn { line = line.dropLast() }
            lines.append(line)
            start = end == bytes.endIndex ? end : end + 1
        }
        return lines
    }

    /// `len(strings.TrimSpace(line)) == 0`: only Unicode white space (Go's `unicode.IsSpace`).
    static func isBlank(_ line: ArraySlice<UInt8>) -> Bool {
        var rest = line
        while !rest.isEmpty {
            let decoded = GlobMatch.decodeRune(rest)
            if decoded.rune == GlobMatch.runeError && decoded.width == 1 { return false }
            guard isGoSpace(decoded.rune) else { return false }
            rest = rest.dropFirst(decoded.width)
        }
        return true
    }

    /// Go's `unicode.IsSpace` (the Unicode White_Space property).
    static func isGoSpace(_ rune: UInt32) -> Bool {
        switch rune {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F,
             0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    // MARK: Identity

    /// Equality is byte equality of the source line and the domain (not Unicode-canonical
    /// `String` equality), since that is what decides behaviour.
    public static func == (lhs: IgnorePattern, rhs: IgnorePattern) -> Bool {
        lhs.lineBytes == rhs.lineBytes && lhs.domainBytes == rhs.domainBytes
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(lineBytes)
        hasher.combine(domainBytes)
    }

    /// A stable, unambiguous one-line rendering: the domain as `/`-prefixed components (empty
    /// for the root), a `:`, then the source line. Backslash, control bytes and invalid UTF-8
    /// are written as `\\`, `\xHH`; in the domain `/` and `:` are escaped too, so the first
    /// unescaped `:` always ends the domain. Examples: `:*.png`, `/a/b:!keep.yaml`.
    public var description: String {
        var out = ""
        for component in domainBytes {
            out += "/"
            out += Self.escape(component[...], extra: [GlobMatch.separator, UInt8(ascii: ":")])
        }
        out += ":"
        out += Self.escape(lineBytes[...], extra: [])
        return out
    }

    private static func escape(_ bytes: ArraySlice<UInt8>, extra: Set<UInt8>) -> String {
        var out = ""
        var rest = bytes
        while let byte = rest.first {
            let decoded = GlobMatch.decodeRune(rest)
            let invalid = decoded.rune == GlobMatch.runeError && decoded.width == 1
            if byte == UInt8(ascii: "\\") {
                out += "\\\\"
            } else if invalid || byte < 0x20 || byte == 0x7F || extra.contains(byte) {
                out += "\\x" + hex(byte)
                rest = rest.dropFirst()
                continue
            } else {
                out += String(decoding: rest.prefix(decoded.width), as: UTF8.self)
            }
            rest = rest.dropFirst(decoded.width)
        }
        return out
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
    }
}
