@testable import ArtifactMirror
import Foundation

/// `.sourceignore` / `spec.ignore` parsing and matching (`IgnorePattern`, `IgnoreRules`,
/// `GlobMatch`): the text comes from the repositories relay-server mirrors.
///
/// Input: ignore-file text, a NUL byte, then newline-separated paths. The first path is the
/// directory the file sits in (its domain; empty for the root); a path ending in `/` is asked
/// about as a directory.
///
/// Invariants: a pattern re-parsed from its own line equals it; descriptions (cache keys) are
/// equal exactly when patterns are; no description holds a newline; a non-anchored pattern
/// that matches a directory matches everything in it; the filter built from the file answers
/// like its pattern list; for globs of only literals and `*`, `GlobMatch` agrees with a plain
/// wildcard matcher (`*` never crossing `/`).
enum IgnoreTarget {
    static func run(_ input: Data) {
        let bytes = Array(input)
        let nul = bytes.firstIndex(of: 0) ?? bytes.count
        let text = Array(bytes[..<nul])
        var lines = bytes[min(nul + 1, bytes.count)...].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let domain = (lines.isEmpty ? [] : Self.components(lines.removeFirst()))
            .filter { !$0.isEmpty }.map { String(decoding: $0, as: UTF8.self) }
        let paths = lines.prefix(16).map { line in
            (components: Self.components(line.last == UInt8(ascii: "/") ? line.dropLast() : line), isDirectory: line.last == UInt8(ascii: "/"))
        }

        let patterns = IgnorePattern.parse(bytes: text, domain: domain)
        for pattern in patterns.prefix(64) {
            let again = IgnorePattern(lineBytes: pattern.lineBytes, domain: pattern.domain)
            let sameParse = again.segmentBytes == pattern.segmentBytes && again.isAnchored == pattern.isAnchored
                && again.isInclusion == pattern.isInclusion && again.isDirectoryOnly == pattern.isDirectoryOnly
            require(again == pattern && again.description == pattern.description && sameParse, "re-parsing \(pattern) changed it")
            require(!pattern.description.contains("\n"), "description with a newline: \(pattern.description)")
        }
        let sample = Array(patterns.prefix(24))
        for (i, a) in sample.enumerated() {
            for b in sample[(i + 1)...] {
                require((a == b) == (a.description == b.description), "descriptions \(a) / \(b) do not track equality")
            }
        }

        let rules = IgnoreRules(ignoreFiles: [(directory: domain, contents: String(decoding: text, as: UTF8.self))])
        let exact = IgnoreRules(matchingExactly: patterns)
        _ = rules.fingerprint
        for path in paths {
            let names = path.components.map { String(decoding: $0, as: UTF8.self) }
            _ = rules.isExcluded(names, isDirectory: path.isDirectory)
            _ = exact.isExcluded(names, isDirectory: path.isDirectory)
            for pattern in sample {
                let result = pattern.match(bytes: path.components, isDirectory: path.isDirectory)
                if path.isDirectory, !pattern.isAnchored, result != .noMatch {
                    let child = pattern.match(bytes: path.components + [Array("child".utf8)], isDirectory: false)
                    require(child == result, "\(pattern) matches directory \(names) but not what is in it")
                }
                if !pattern.isAnchored, let glob = pattern.segmentBytes.first, pattern.segmentBytes.count == 1,
                   !glob.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "\\") }),
                   glob.filter({ $0 == UInt8(ascii: "*") }).count <= 3 {
                    // (bounded: the reference backtracks)
                    for name in path.components where name.count <= 128 {
                        let expected = wildcard(glob[...], name[...])
                        let actual = (try? GlobMatch.match(pattern: glob, name: name)) ?? !expected
                        require(actual == expected, "glob \(String(decoding: glob, as: UTF8.self)) on \(String(decoding: name, as: UTF8.self)): \(actual)")
                    }
                }
            }
        }
    }

    private static func components(_ line: ArraySlice<UInt8>) -> [[UInt8]] {
        line.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map(Array.init)
    }

    /// Reference matcher for patterns of literal bytes and `*` (any run of bytes but `/`).
    private static func wildcard(_ pattern: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        var pattern = pattern, name = name
        while let byte = pattern.first, byte != UInt8(ascii: "*") {
            guard name.first == byte else { return false }
            pattern = pattern.dropFirst()
            name = name.dropFirst()
        }
        if pattern.isEmpty { return name.isEmpty }
        let rest = pattern.drop { $0 == UInt8(ascii: "*") }
        var candidate = name
        while true {
            if wildcard(rest, candidate) { return true }
            guard let first = candidate.first, first != UInt8(ascii: "/") else { return false }
            candidate = candidate.dropFirst()
        }
    }
}
