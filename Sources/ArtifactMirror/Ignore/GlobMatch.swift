// Shell-style name matching with the exact semantics of Go's `path/filepath.Match`
// on a Unix system (separator `/`, backslash escapes enabled).
//
// Flux's `.sourceignore` handling (fluxcd/pkg `sourceignore/gitignore/pattern.go`) compares every
// pattern segment with one path component through `filepath.Match`, so this file is the base
// of the whole ignore machinery. It is an original Swift implementation of the behaviour
// documented for Go 1.16 and later:
//
//     pattern:   { term }
//     term:      '*'            any run of non-'/' characters
//                '?'            one non-'/' character (one UTF-8 rune)
//                '[' ['^'] { character-range } ']'
//                               character class (must be non-empty)
//                c              the character c (c != '*', '?', '\\', '[')
//                '\\' c         the character c
//     character-range:
//                c              the character c (c != '\\', '-', ']')
//                '\\' c         the character c
//                lo '-' hi      any character c with lo <= c <= hi
//
// Go works on the UTF-8 bytes of both strings. Literal characters are compared byte by byte,
// while `?` and character classes consume one rune, decoded the way Go's
// `utf8.DecodeRuneInString` does (an invalid byte decodes as U+FFFD and consumes one byte).
// A `*` looks for the rest of the pattern at every *byte* offset. This file does the same on
// `String.utf8`, so even odd cases (such as `*[\u{FFFD}]` against `é`, which Go reports as a
// match) come out identical.

/// Go's `path/filepath.Match`, on one path component.
///
/// ```swift
/// try GlobMatch.match("*.png", "logo.png")   // true
/// try GlobMatch.match("[a-", "a")            // throws GlobMatch.BadPattern
/// ```
///
/// As in Go, the only error is ``BadPattern`` (Go's `filepath.ErrBadPattern`). Whether it is
/// reported can depend on how far matching got (Go checks the syntax of the chunks it reaches),
/// but a malformed pattern never matches anything. The gitignore code treats the error as
/// "no match" (see ``matches(_:_:)``).
public enum GlobMatch {
    /// A malformed pattern: an unterminated or empty `[...]` class, a bad range such as `[-x]`,
    /// `[x-]` or `[a-b-c]`, or a trailing `\`. Mirrors Go's `filepath.ErrBadPattern`.
    public struct BadPattern: Error, Equatable, Sendable, CustomStringConvertible {
        public init() {}
        /// Go's error text.
        public var description: String { "syntax error in pattern" }
    }

    /// Reports whether `name` matches the whole of `pattern` (Go's `filepath.Match(pattern, name)`).
    ///
    /// - Throws: ``BadPattern`` when the pattern is malformed in a part that matching reached.
    public static func match(_ pattern: String, _ name: String) throws(BadPattern) -> Bool {
        try match(pattern: Array(pattern.utf8), name: Array(name.utf8))
    }

    /// Byte-level form of ``match(_:_:)``: `pattern` and `name` are raw UTF-8 (possibly invalid,
    /// as a Go string may be).
    public static func match(pattern: [UInt8], name: [UInt8]) throws(BadPattern) -> Bool {
        try matchBytes(pattern[...], name[...])
    }

    /// `match` with a malformed pattern treated as "no match", as `pattern.go` in fluxcd/pkg
    /// (and go-git) does with every `filepath.Match` error.
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        (try? match(pattern, name)) ?? false
    }

    // MARK: - Implementation

    typealias Bytes = ArraySlice<UInt8>

    static let separator = UInt8(ascii: "/")
    private static let star = UInt8(ascii: "*")
    private static let question = UInt8(ascii: "?")
    private static let backslash = UInt8(ascii: "\\")
    private static let openBracket = UInt8(ascii: "[")
    private static let closeBracket = UInt8(ascii: "]")
    private static let caret = UInt8(ascii: "^")
    private static let dash = UInt8(ascii: "-")

    /// Internal entry used by ``IgnorePattern`` (error means no match).
    static func matchesBytes(_ pattern: Bytes, _ name: Bytes) -> Bool {
        (try? matchBytes(pattern, name)) ?? false
    }

    /// The shapes that dominate ignore files, answered without the general algorithm (the
    /// packer tests every path against every pattern): a literal (no `*?[\`) matches only
    /// itself, and `*` + literal matches any name without a separator that ends with the
    /// literal. Neither shape can be a malformed pattern. nil means "use the general path".
    @inline(__always)
    private static func fastMatch(_ pattern: Bytes, _ name: Bytes) -> Bool? {
        var literalStart = pattern.startIndex
        let leadingStar = pattern.first == UInt8(ascii: "*")
        if leadingStar { literalStart += 1 }
        for byte in pattern[literalStart...] {
            switch byte {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "\\"): return nil
            default: continue
            }
        }
        let literal = pattern[literalStart...]
        if !leadingStar { return name.elementsEqual(literal) }
        guard name.count >= literal.count, !name.contains(separator) else { return false }
        return name[(name.endIndex - literal.count)...].elementsEqual(literal)
    }

    static func matchBytes(_ pattern: Bytes, _ name: Bytes) throws(BadPattern) -> Bool {
        if let fast = fastMatch(pattern, name) { return fast }
        var pattern = pattern
        var name = name
        nextChunk: while !pattern.isEmpty {
            let scanned = scanChunk(pattern)
            pattern = scanned.rest
            let chunk = scanned.chunk
            if scanned.star && chunk.isEmpty {
                // A trailing star eats the rest of the name, unless it holds a separator.
                return !name.contains(separator)
            }
            // Try the chunk at the current position. If it is the last chunk it must also
            // consume the whole name; otherwise a star before it may still find a later fit.
            if let rest = try matchChunk(chunk, name), rest.isEmpty || !pattern.isEmpty {
                name = rest
                continue nextChunk
            }
            if scanned.star {
                // Retry after skipping 1, 2, ... bytes of the name (never skipping a separator).
                var i = name.startIndex
                while i < name.endIndex && name[i] != separator {
                    if let rest = try matchChunk(chunk, name[(i + 1)...]) {
                        if pattern.isEmpty && !rest.isEmpty {
                            // Last chunk must exhaust the name; keep looking.
                            i += 1
                            continue
                        }
                        name = rest
                        continue nextChunk
                    }
                    i += 1
                }
            }
            return false
        }
        return name.isEmpty
    }

    /// Splits off the next chunk: optional leading stars, then a run of single-character terms
    /// up to the next `*` that is not inside a `[...]` class.
    static func scanChunk(_ pattern: Bytes) -> (star: Bool, chunk: Bytes, rest: Bytes) {
        var pattern = pattern
        var star = false
        while pattern.first == Self.star {
            pattern = pattern.dropFirst()
            star = true
        }
        var inRange = false
        var i = pattern.startIndex
        while i < pattern.endIndex {
            switch pattern[i] {
            case backslash:
                // A dangling backslash is reported by matchChunk.
                if i + 1 < pattern.endIndex { i += 1 }
            case openBracket:
                inRange = true
            case closeBracket:
                inRange = false
            case Self.star:
                if !inRange {
                    return (star, pattern[pattern.startIndex..<i], pattern[i...])
                }
            default:
                break
            }
            i += 1
        }
        return (star, pattern, pattern[pattern.endIndex...])
    }

    /// Matches `chunk` (no stars) against the start of `s`. Returns the unconsumed rest of `s`,
    /// or nil on mismatch. After a mismatch the chunk is still parsed to the end so that a
    /// syntax error in it is reported (Go ≥ 1.16 behaviour).
    static func matchChunk(_ chunk: Bytes, _ s: Bytes) throws(BadPattern) -> Bytes? {
        var chunk = chunk
        var s = s
        var failed = false
        while let head = chunk.first {
            failed = failed || s.isEmpty
            switch head {
            case openBracket:
                var rune: UInt32 = 0
                if !failed {
                    let decoded = decodeRune(s)
                    rune = decoded.rune
                    s = s.dropFirst(decoded.width)
                }
                chunk = chunk.dropFirst()
                var negated = false
                if chunk.first == caret {
                    negated = true
                    chunk = chunk.dropFirst()
                }
                var matched = false
                var rangeCount = 0
                while true {
                    if chunk.first == closeBracket && rangeCount > 0 {
                        chunk = chunk.dropFirst()
                        break
                    }
                    let low = try classChar(chunk)
                    chunk = low.rest
                    var high = low.rune
                    if chunk.first == dash {
                        let upper = try classChar(chunk.dropFirst())
                        high = upper.rune
                        chunk = upper.rest
                    }
                    if low.rune <= rune && rune <= high { matched = true }
                    rangeCount += 1
                }
                failed = failed || matched == negated

            case question:
                if !failed {
                    failed = s.first == separator
                    s = s.dropFirst(decodeRune(s).width)
                }
                chunk = chunk.dropFirst()

            default:
                if head == backslash {
                    chunk = chunk.dropFirst()
                    if chunk.isEmpty { throw BadPattern() }
                }
                if !failed, let literal = chunk.first, let next = s.first {
                    failed = literal != next
                    s = s.dropFirst()
                }
                chunk = chunk.dropFirst()
            }
        }
        return failed ? nil : s
    }

    /// One possibly escaped character of a class (Go's `getEsc`). The class must continue
    /// after it, so running out of pattern is an error too.
    private static func classChar(_ chunk: Bytes) throws(BadPattern) -> (rune: UInt32, rest: Bytes) {
        guard let first = chunk.first, first != dash, first != closeBracket else {
            throw BadPattern()
        }
        var chunk = chunk
        if first == backslash {
            chunk = chunk.dropFirst()
            if chunk.isEmpty { throw BadPattern() }
        }
        let decoded = decodeRune(chunk)
        if decoded.rune == runeError && decoded.width == 1 { throw BadPattern() }
        let rest = chunk.dropFirst(decoded.width)
        if rest.isEmpty { throw BadPattern() }
        return (decoded.rune, rest)
    }

    static let runeError: UInt32 = 0xFFFD

    /// Go's `utf8.DecodeRuneInString`: the first rune of `s` and its width in bytes.
    /// Empty input gives (U+FFFD, 0); an invalid or truncated sequence gives (U+FFFD, 1).
    static func decodeRune(_ s: Bytes) -> (rune: UInt32, width: Int) {
        guard let b0 = s.first else { return (runeError, 0) }
        if b0 < 0x80 { return (UInt32(b0), 1) }
        let start = s.startIndex
        let width: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: width = 2
        case 0xE0: width = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: width = 3
        case 0xED: width = 3; high = 0x9F
        case 0xF0: width = 4; low = 0x90
        case 0xF1...0xF3: width = 4
        case 0xF4: width = 4; high = 0x8F
        default: return (runeError, 1)
        }
        guard s.count >= width else {
            // Truncated: Go still reports (RuneError, 1).
            return (runeError, 1)
        }
        let b1 = s[start + 1]
        guard b1 >= low && b1 <= high else { return (runeError, 1) }
        var rune: UInt32
        switch width {
        case 2:
            rune = UInt32(b0 & 0x1F) << 6 | UInt32(b1 & 0x3F)
        case 3:
            let b2 = s[start + 2]
            guard (0x80...0xBF).contains(b2) else { return (runeError, 1) }
            rune = UInt32(b0 & 0x0F) << 12 | UInt32(b1 & 0x3F) << 6 | UInt32(b2 & 0x3F)
        default:
            let b2 = s[start + 2]
            let b3 = s[start + 3]
            guard (0x80...0xBF).contains(b2), (0x80...0xBF).contains(b3) else {
                return (runeError, 1)
            }
            rune = UInt32(b0 & 0x07) << 18 | UInt32(b1 & 0x3F) << 12
                | UInt32(b2 & 0x3F) << 6 | UInt32(b3 & 0x3F)
        }
        return (rune, width)
    }
}
