import Testing
@testable import ArtifactMirror

// Expectations marked "Go" come from Go's own test tables (path/filepath match_test.go,
// fluxcd/pkg sourceignore/gitignore pattern_test.go + matcher_test.go, sourceignore_test.go)
// or were checked by running the same input through Go 1.19's filepath.Match and a verbatim
// copy of fluxcd/pkg's gitignore package.

// MARK: - Helpers

private func comps(_ path: String) -> [String] {
    path.isEmpty ? [] : IgnoreRules.components(of: path)
}

private func result(_ line: String, _ domain: [String] = [], _ path: String, dir: Bool = false)
    -> IgnoreMatchResult
{
    IgnorePattern(line: line, domain: domain).match(comps(path), isDirectory: dir)
}

private enum Outcome: Sendable {
    case match, noMatch, bad
}

private func outcome(_ pattern: String, _ name: String) -> Outcome {
    do { return try GlobMatch.match(pattern, name) ? .match : .noMatch } catch { return .bad }
}

// MARK: - GlobMatch (Go filepath.Match)

@Suite struct GlobMatchTests {
    /// Go's `matchTests` table from path/filepath/match_test.go, in full.
    fileprivate static let goTable: [(String, String, Outcome)] = [
        ("abc", "abc", .match),
        ("*", "abc", .match),
        ("*c", "abc", .match),
        ("a*", "a", .match),
        ("a*", "abc", .match),
        ("a*", "ab/c", .noMatch),
        ("a*/b", "abc/b", .match),
        ("a*/b", "a/c/b", .noMatch),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", .match),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", .match),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", .noMatch),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", .noMatch),
        ("a*b?c*x", "abxbbxdbxebxczzx", .match),
        ("a*b?c*x", "abxbbxdbxebxczzy", .noMatch),
        ("ab[c]", "abc", .match),
        ("ab[b-d]", "abc", .match),
        ("ab[e-g]", "abc", .noMatch),
        ("ab[^c]", "abc", .noMatch),
        ("ab[^b-d]", "abc", .noMatch),
        ("ab[^e-g]", "abc", .match),
        ("a\\*b", "a*b", .match),
        ("a\\*b", "ab", .noMatch),
        ("a?b", "a☺b", .match),
        ("a[^a]b", "a☺b", .match),
        ("a???b", "a☺b", .noMatch),
        ("a[^a][^a][^a]b", "a☺b", .noMatch),
        ("[a-ζ]*", "α", .match),
        ("*[a-ζ]", "A", .noMatch),
        ("a?b", "a/b", .noMatch),
        ("a*b", "a/b", .noMatch),
        ("[\\]a]", "]", .match),
        ("[\\-]", "-", .match),
        ("[x\\-]", "x", .match),
        ("[x\\-]", "-", .match),
        ("[x\\-]", "z", .noMatch),
        ("[\\-x]", "x", .match),
        ("[\\-x]", "-", .match),
        ("[\\-x]", "a", .noMatch),
        ("[]a]", "]", .bad),
        ("[-]", "-", .bad),
        ("[x-]", "x", .bad),
        ("[x-]", "-", .bad),
        ("[x-]", "z", .bad),
        ("[-x]", "x", .bad),
        ("[-x]", "-", .bad),
        ("[-x]", "a", .bad),
        ("\\", "a", .bad),
        ("[a-b-c]", "a", .bad),
        ("[", "a", .bad),
        ("[^", "a", .bad),
        ("[^bc", "a", .bad),
        ("a[", "a", .bad),
        ("a[", "ab", .bad),
        ("a[", "x", .bad),
        ("a/b[", "x", .bad),
        ("*x", "xxx", .match),
    ]

    @Test(arguments: 0..<goTable.count)
    func goMatchTable(_ index: Int) {
        let (pattern, name, expected) = Self.goTable[index]
        #expect(outcome(pattern, name) == expected, "Match(\(pattern), \(name))")
    }

    /// Further cases, each checked against Go 1.19.
    @Test func goCheckedExtras() {
        #expect(outcome("*", "") == .match)
        #expect(outcome("", "") == .match)
        #expect(outcome("", "a") == .noMatch)
        #expect(outcome("\\a", "a") == .match)
        #expect(outcome("[\\a-\\c]", "b") == .match)
        #expect(outcome("[^a]", "☺") == .match)
        #expect(outcome("?", "☺") == .match)
        #expect(outcome("??", "☺") == .noMatch)
        #expect(outcome("foo\\ ", "foo ") == .match)
        #expect(outcome("foo\\", "foo") == .bad)
        // Whether the error surfaces depends on how far matching gets, as in Go.
        #expect(outcome("a*[", "b") == .noMatch)
        #expect(outcome("a*[", "a") == .bad)
        #expect(outcome("a[", "b") == .bad)
        // Byte-wise comparison: NFC "é" is not NFD "e\u{301}" (Swift's == would say equal).
        #expect(outcome("é", "e\u{301}") == .noMatch)
        // A star retries at every byte offset, so a class can see a lone continuation byte
        // (decoded as U+FFFD) in the middle of "é".
        #expect(outcome("*[\u{FFFD}]", "é") == .match)
        #expect(outcome("[\u{FFFD}]", "é") == .noMatch)
    }

    @Test func byteLevelInvalidUTF8() throws {
        // "?" consumes one byte of an invalid sequence, like utf8.DecodeRuneInString.
        #expect(try GlobMatch.match(pattern: Array("a?b".utf8), name: [0x61, 0xFF, 0x62]))
        #expect(try GlobMatch.match(pattern: Array("??".utf8), name: [0xE2, 0x98]))
        // An invalid byte inside a class is a syntax error.
        #expect(throws: GlobMatch.BadPattern.self) {
            try GlobMatch.match(pattern: [0x5B, 0xFF, 0x5D], name: [0x61])
        }
    }

    @Test func matchesTreatsErrorsAsNoMatch() {
        #expect(GlobMatch.matches("*.png", "logo.png"))
        #expect(!GlobMatch.matches("[", "["))
        #expect(GlobMatch.BadPattern().description == "syntax error in pattern")
    }
}

// MARK: - IgnorePattern parsing

@Suite struct IgnorePatternParsingTests {
    @Test func negationDirOnlyAndAnchoring() {
        let keep = IgnorePattern(line: "!keep.yaml")
        #expect(keep.isInclusion && !keep.isDirectoryOnly && !keep.isAnchored)
        #expect(keep.segments == ["keep.yaml"])

        let deploy = IgnorePattern(line: "deploy/")
        #expect(deploy.isDirectoryOnly && !deploy.isAnchored && deploy.segments == ["deploy"])

        let rooted = IgnorePattern(line: "/deploy")
        #expect(rooted.isAnchored && !rooted.isDirectoryOnly && rooted.segments == ["", "deploy"])

        let nested = IgnorePattern(line: "!a/b/")
        #expect(nested.isInclusion && nested.isDirectoryOnly && nested.isAnchored)
        #expect(nested.segments == ["a", "b"])

        let bang = IgnorePattern(line: "!")
        #expect(bang.isInclusion && bang.segments == [""])
        #expect(bang.line == "!")
    }

    @Test func trailingSpaces() {
        #expect(IgnorePattern(line: "foo   ").segments == ["foo"])
        // Trimming happens before the dir-only check.
        let dir = IgnorePattern(line: "dir/  ")
        #expect(dir.isDirectoryOnly && dir.segments == ["dir"])
        // Ends with "\ ": nothing trimmed; filepath.Match reads "\ " as a literal space.
        #expect(IgnorePattern(line: "foo\\ ").segments == ["foo\\ "])
        #expect(result("foo\\ ", [], "foo ") == .exclude)
        // "\ " followed by more spaces: all trailing spaces go, leaving a dangling backslash,
        // a malformed pattern that never matches (Go).
        #expect(IgnorePattern(line: "foo\\  ").segments == ["foo\\"])
        #expect(result("foo\\  ", [], "foo ") == .noMatch)
        #expect(result("foo\\  ", [], "foo\\") == .noMatch)
        // Only spaces are trimmed, not tabs; leading spaces stay.
        #expect(IgnorePattern(line: "a\t").segments == ["a\t"])
        #expect(IgnorePattern(line: "  a").segments == ["  a"])
    }

    @Test func parseSkipsCommentsAndBlankLines() {
        let text = "# comment\n\n   \n\t\n*.png\n  # not a comment\n!keep.png\n#\n\u{00A0}\u{3000}\ndeploy/"
        let lines = IgnorePattern.parse(text).map(\.line)
        #expect(lines == ["*.png", "  # not a comment", "!keep.png", "deploy/"])
        // A line with leading blanks before '#' really is a pattern (Go).
        #expect(result("  #x", [], "  #x") == .exclude)
    }

    @Test func parseLineEndingsLikeBufioScanLines() {
        #expect(IgnorePattern.parse("a\r\nb\r\n").map(\.line) == ["a", "b"])
        // Only one \r is dropped, and only at the end of a line.
        #expect(IgnorePattern.parse("a\r\r\nb\rc").map(\.line) == ["a\r", "b\rc"])
        // The last line needs no newline; a trailing newline adds no empty line.
        #expect(IgnorePattern.parse("a\nb").map(\.line) == ["a", "b"])
        #expect(IgnorePattern.parse("\r\n\r\n").isEmpty)
        #expect(IgnorePattern.parse("").isEmpty)
        // A bare "\r" line is blank.
        #expect(IgnorePattern.parse("\r").isEmpty)
    }

    @Test func parseStopsAtOverlongLineLikeBufioScanner() {
        let ok = String(repeating: "x", count: IgnorePattern.maxLineLength - 1)
        let tooLong = String(repeating: "x", count: IgnorePattern.maxLineLength)
        #expect(IgnorePattern.parse("a\n\(ok)\nb\n").map(\.line.utf8.count) == [1, 65535, 1])
        #expect(IgnorePattern.parse("a\n\(ok)").map(\.line.utf8.count) == [1, 65535])
        // 65536 bytes: Go's Scanner fails with ErrTooLong; Flux keeps what came before.
        #expect(IgnorePattern.parse("a\n\(tooLong)\nb\n").map(\.line) == ["a"])
        #expect(IgnorePattern.parse("a\n\(tooLong)").map(\.line) == ["a"])
        // The \r of a CRLF counts towards the limit.
        #expect(IgnorePattern.parse("a\n\(ok)\r\nb").map(\.line) == ["a"])
    }

    @Test func parseKeepsDomain() {
        let patterns = IgnorePattern.parse("*.yaml\n", domain: ["a", "b"])
        #expect(patterns.count == 1 && patterns[0].domain == ["a", "b"])
    }

    @Test func equalityIsByteWise() {
        #expect(IgnorePattern(line: "x", domain: ["a"]) == IgnorePattern(line: "x", domain: ["a"]))
        #expect(IgnorePattern(line: "é") != IgnorePattern(line: "e\u{301}"))
        #expect(IgnorePattern(line: "x", domain: ["a"]) != IgnorePattern(line: "x", domain: []))
    }

    @Test func descriptionIsUnambiguous() {
        #expect(IgnorePattern(line: "*.png").description == ":*.png")
        #expect(IgnorePattern(line: "!keep.yaml", domain: ["a", "b"]).description == "/a/b:!keep.yaml")
        #expect(IgnorePattern(line: "a\\ \t", domain: ["x:y"]).description == "/x\\x3Ay:a\\\\ \\x09")
        #expect(IgnorePattern(line: "é").description == ":é")
        #expect(IgnorePattern(lineBytes: [0x61, 0xFF]).description == ":a\\xFF")
    }
}

// MARK: - IgnorePattern matching

@Suite struct IgnorePatternMatchTests {
    @Test func nameMatchAtAnyDepth() {
        #expect(result("*.png", [], "logo.png") == .exclude)
        #expect(result("*.png", [], "a/b/logo.png") == .exclude)
        // A directory named x.png, and everything in it.
        #expect(result("*.png", [], "x.png", dir: true) == .exclude)
        #expect(result("*.png", [], "x.png/y.yaml") == .exclude)
        #expect(result("*.png", [], "png") == .noMatch)
        // Byte-wise: NFD spelling does not match an NFC pattern.
        #expect(result("é", [], "e\u{301}") == .noMatch)
    }

    @Test func directoryOnly() {
        #expect(result("deploy/", [], "deploy", dir: true) == .exclude)
        #expect(result("deploy/", [], "deploy", dir: false) == .noMatch)
        #expect(result("deploy/", [], "deploy/x/y.yaml") == .exclude)
        #expect(result("deploy/", [], "a/deploy", dir: true) == .exclude)
        #expect(result("a/b/", [], "a/b", dir: false) == .noMatch)
        #expect(result("a/b/", [], "a/b/c") == .exclude)
        #expect(result("dir/  ", [], "dir", dir: true) == .exclude)
        #expect(result("dir/  ", [], "dir", dir: false) == .noMatch)
    }

    @Test func anchoredPatterns() {
        #expect(result("/deploy", [], "deploy", dir: true) == .exclude)
        #expect(result("/deploy", [], "deploy/x/y.yaml") == .exclude)
        #expect(result("/deploy", [], "a/deploy") == .noMatch)
        #expect(result("a/b", [], "a/b") == .exclude)
        #expect(result("a/b", [], "a/b/c") == .exclude)
        #expect(result("a/b", [], "x/a/b") == .noMatch)
        #expect(result("a//b", [], "a/b") == .exclude)
        #expect(result("a/*.yaml", [], "a/x.yaml") == .exclude)
        #expect(result("a/*.yaml", [], "a/b/x.yaml") == .noMatch)
    }

    @Test func doubleStarForms() {
        #expect(result("**/foo", [], "foo") == .exclude)
        #expect(result("**/foo", [], "a/b/foo") == .exclude)
        #expect(result("**/foo", [], "a/foo/bar") == .exclude)
        #expect(result("**/foo", [], "foobar") == .noMatch)
        #expect(result("a/**/b", [], "a/b") == .exclude)
        #expect(result("a/**/b", [], "a/x/y/b") == .exclude)
        #expect(result("a/**/b", [], "a/x") == .noMatch)
        #expect(result("a/**", [], "a/x") == .exclude)
        #expect(result("a/**", [], "a/x/y") == .exclude)
        #expect(result("**", [], "a/b") == .exclude)
    }

    /// Places where go-git (and so Flux) differs from git; each checked against Go.
    @Test func doubleStarQuirks() {
        // "a/**" also matches "a" itself.
        #expect(result("a/**", [], "a") == .exclude)
        // "/**" matches nothing.
        #expect(result("/**", [], "a") == .noMatch)
        #expect(result("/**", [], "a/b", dir: true) == .noMatch)
        // "**" followed by a segment takes the first fitting component, no backtracking.
        #expect(result("**/a/b", [], "x/a/b") == .exclude)
        #expect(result("**/a/b", [], "a/x/a/b") == .noMatch)
        // "**" inside a longer segment never matches.
        #expect(result("a/**b", [], "a/xb") == .noMatch)
        // "**/" is a non-anchored, directory-only "**".
        #expect(result("**/", [], "a", dir: false) == .noMatch)
        #expect(result("**/", [], "a", dir: true) == .exclude)
        #expect(result("**/", [], "a/b", dir: false) == .exclude)
        // "!" alone matches only an empty component.
        #expect(result("!", [], "a") == .noMatch)
    }

    @Test func domainScoping() {
        let ab = ["a", "b"]
        #expect(result("*.yaml", ab, "a/b/x.yaml") == .exclude)
        #expect(result("*.yaml", ab, "a/b/c/x.yaml") == .exclude)
        #expect(result("*.yaml", ab, "x.yaml") == .noMatch)
        #expect(result("*.yaml", ab, "a/x.yaml") == .noMatch)
        #expect(result("*.yaml", ab, "a/c/x.yaml") == .noMatch)
        // Never the domain directory itself, even when its name would match.
        #expect(result("b", ab, "a/b", dir: true) == .noMatch)
        // Anchored patterns are anchored at the domain.
        #expect(result("/deploy", ["a"], "a/deploy/x.yaml") == .exclude)
        #expect(result("/deploy", ["a"], "deploy", dir: true) == .noMatch)
        // The root path never matches.
        #expect(result("*", [], "") == .noMatch)
    }

    /// fluxcd/pkg sourceignore/gitignore/pattern_test.go, every case.
    static let fluxPatternTests: [(String, [String], [String], Bool, IgnoreMatchResult)] = [
        ("!vul?ano", [], ["value", "vulkano", "tail"], false, .include),
        ("value", ["head", "middle", "tail"], ["head", "middle"], false, .noMatch),
        ("value", ["head", "middle", "tail"], ["head", "middle", "tail"], false, .noMatch),
        ("value", ["head", "middle", "tail"], ["head", "middle", "_tail_", "value"], false, .noMatch),
        ("middle/", ["value", "volcano"], ["value", "volcano", "middle", "tail"], false, .exclude),
        ("volcano/", ["value", "volcano"], ["value", "volcano", "tail"], true, .noMatch),
        ("value", [], ["value", "tail"], false, .exclude),
        ("value", [], ["head", "value", "tail"], false, .exclude),
        ("value", [], ["head", "value"], false, .exclude),
        ("value/", [], ["value", "tail"], false, .exclude),
        ("value/", [], ["head", "value", "tail"], false, .exclude),
        ("value/", [], ["head", "value"], true, .exclude),
        ("value/", [], ["head", "value"], false, .noMatch),
        ("value", [], ["head", "val", "tail"], false, .noMatch),
        ("val", [], ["head", "value", "tail"], false, .noMatch),
        ("v*o", [], ["value", "vulkano", "tail"], false, .exclude),
        ("vul?ano", [], ["value", "vulkano", "tail"], false, .exclude),
        ("v[ou]l[kc]ano", [], ["value", "volcano"], false, .exclude),
        ("v[ou]l[", [], ["value", "vol["], false, .noMatch),
        ("/value/vul?ano", [], ["value", "vulkano", "tail"], false, .exclude),
        ("middle/tail/", ["value", "volcano"], ["value", "volcano", "middle", "tail"], true, .exclude),
        ("volcano/tail", ["value", "volcano"], ["value", "volcano", "tail"], false, .noMatch),
        ("value/vul?ano", [], ["value", "vulkano", "tail"], false, .exclude),
        ("value/vulkano", [], ["value", "volcano"], false, .noMatch),
        ("value/vul?ano", [], ["value"], false, .noMatch),
        ("/value/volcano", [], ["value", "value", "volcano"], false, .noMatch),
        ("**/*lue/vol?ano", [], ["value", "volcano", "tail"], false, .exclude),
        ("**/*lue/vol?ano", [], ["head", "value", "volcano", "tail"], false, .exclude),
        ("**/*lue/vol?ano", [], ["head", "value", "Volcano", "tail"], false, .noMatch),
        ("**/*lue/vol?ano/", [], ["head", "value", "volcano", "tail"], false, .exclude),
        ("**/*lue/vol?ano/", [], ["head", "value", "volcano"], true, .exclude),
        ("**/*lue/vol?ano/", [], ["head", "value", "Colcano"], true, .noMatch),
        ("**/*lue/vol?ano/", [], ["head", "value", "volcano"], false, .noMatch),
        ("/*lue/vol?ano/**", [], ["value", "volcano", "tail", "moretail"], false, .exclude),
        ("/*lue/vol?ano/**", [], ["value", "volcano"], false, .exclude),
        ("/*lue/**/vol?ano", [], ["value", "volcano"], false, .exclude),
        ("/*lue/**/vol?ano", [], ["value", "middle", "volcano"], false, .exclude),
        ("/*lue/**/vol?ano", [], ["value", "middle1", "middle2", "volcano"], false, .exclude),
        ("/*lue/**/vol?ano/", [], ["value", "middle1", "middle2", "volcano"], true, .exclude),
        ("/*lue/**/vol?ano/", [], ["value", "middle1", "middle2", "volcano"], false, .noMatch),
        ("/*lue/**/vol?ano/", [], ["value", "middle1", "middle2", "volcano", "tail"], false, .exclude),
        ("/*lue/**foo/vol?ano", [], ["value", "foo", "volcano", "tail"], false, .noMatch),
        ("**/head/v[ou]l[kc]ano", [], ["value", "head", "volcano"], false, .exclude),
        ("**/head/v[ou]l[", [], ["value", "head", "vol["], false, .noMatch),
        ("/value/**/v[ou]l[", [], ["value", "head", "vol["], false, .noMatch),
        ("**/android/**/GeneratedPluginRegistrant.java", [],
         ["packages", "flutter_tools", "lib", "src", "android", "gradle.dart"], false, .noMatch),
    ]

    @Test(arguments: 0..<fluxPatternTests.count)
    func fluxPatternTest(_ index: Int) {
        let (line, domain, path, isDir, expected) = Self.fluxPatternTests[index]
        let got = IgnorePattern(line: line, domain: domain).match(path, isDirectory: isDir)
        #expect(got == expected, "\(line) \(domain) \(path) dir=\(isDir)")
    }

    /// fluxcd/pkg sourceignore/gitignore/matcher_test.go.
    @Test func fluxMatcherTest() {
        let rules = IgnoreRules(matchingExactly: [
            IgnorePattern(line: "**/middle/v[uo]l?ano"),
            IgnorePattern(line: "!volcano"),
        ])
        #expect(rules.isExcluded(["head", "middle", "vulkano"], isDirectory: false))
        #expect(!rules.isExcluded(["head", "middle", "volcano"], isDirectory: false))
    }
}

// MARK: - IgnoreRules

@Suite struct IgnoreRulesTests {
    @Test func constantsAreFlux() {
        #expect(IgnoreRules.ignoreFileName == ".sourceignore")
        #expect(IgnoreRules.excludeVCS == ".git/,.gitignore,.gitmodules,.gitattributes")
        #expect(IgnoreRules.excludeExt == "*.jpg,*.jpeg,*.gif,*.png,*.wmv,*.flv,*.tar.gz,*.zip")
        #expect(IgnoreRules.excludeCI == ".github/,.circleci/,.travis.yml,.gitlab-ci.yml,appveyor.yml,.drone.yml,cloudbuild.yaml,codeship-services.yml,codeship-steps.yml")
        #expect(IgnoreRules.excludeExtra == "**/.goreleaser.yml,**/.sops.yaml,**/.flux.yaml")
        #expect(IgnoreRules.vcsPatterns().map(\.line) == [".git/", ".gitignore", ".gitmodules", ".gitattributes"])
        #expect(IgnoreRules.defaultPatterns().count == 8 + 9 + 3)
        #expect(IgnoreRules.vcsPatterns(domain: ["d"]).allSatisfy { $0.domain == ["d"] })
    }

    @Test func defaultsWithoutUserPatterns() {
        let rules = IgnoreRules(userPatterns: [])
        #expect(rules.usesDefaultExclusions)
        #expect(rules.patterns.count == 4 + 20)
        let excluded: [(String, Bool)] = [
            (".git", true), (".git/HEAD", false), (".git/refs/heads/main", false),
            (".gitignore", false), ("sub/.gitmodules", false), (".gitattributes", false),
            ("logo.png", false), ("img/a.JPG.jpg", false), ("x.tar.gz", false), ("a/b/c.zip", false),
            (".github", true), (".github/workflows/x.yml", false), (".circleci/config.yml", false),
            (".travis.yml", false), ("sub/.gitlab-ci.yml", false), ("cloudbuild.yaml", false),
            (".sops.yaml", false), ("a/b/.sops.yaml", false), ("x/.flux.yaml", false),
            (".goreleaser.yml", false), ("d/x.png/y.yaml", false),
        ]
        for (path, dir) in excluded {
            #expect(rules.isExcluded(path: path, isDirectory: dir), "\(path) should be excluded")
        }
        let kept: [(String, Bool)] = [
            (".sourceignore", false), ("a/.sourceignore", false), ("deploy", true),
            ("deploy/app.yaml", false), ("README.md", false), ("logo.svg", false),
            (".github.yaml", false), ("x.tar", false), (".gitkeep", false),
        ]
        for (path, dir) in kept {
            #expect(!rules.isExcluded(path: path, isDirectory: dir), "\(path) should be kept")
        }
        // The root is never excluded.
        #expect(!rules.isExcluded([], isDirectory: true))
    }

    @Test func anyUserPatternDropsExtCIAndExtraButKeepsVCS() {
        let rules = IgnoreRules(userPatterns: [IgnorePattern(line: "tmp/")])
        #expect(!rules.usesDefaultExclusions)
        #expect(rules.patterns.map(\.line) == [".git/", ".gitignore", ".gitmodules", ".gitattributes", "tmp/"])
        #expect(!rules.isExcluded(path: "logo.png", isDirectory: false))
        #expect(!rules.isExcluded(path: ".github/workflows/x.yml", isDirectory: false))
        #expect(!rules.isExcluded(path: ".github", isDirectory: true))
        #expect(!rules.isExcluded(path: "a/.sops.yaml", isDirectory: false))
        #expect(rules.isExcluded(path: ".git", isDirectory: true))
        #expect(rules.isExcluded(path: ".git/HEAD", isDirectory: false))
        #expect(rules.isExcluded(path: ".gitignore", isDirectory: false))
        #expect(rules.isExcluded(path: "tmp/x", isDirectory: false))
        #expect(!rules.isExcluded(path: ".sourceignore", isDirectory: false))
    }

    @Test func commentOnlyIgnoreFileKeepsDefaults() {
        let rules = IgnoreRules(ignoreFiles: [([], "# nothing here\n\n")], specIgnore: "   \n")
        #expect(rules.usesDefaultExclusions)
        #expect(rules.isExcluded(path: "logo.png", isDirectory: false))
    }

    @Test func laterPatternsWin() {
        let rules = IgnoreRules(userPatterns: IgnorePattern.parse("*.yaml\n!keep.yaml\n"))
        #expect(rules.isExcluded(path: "other.yaml", isDirectory: false))
        #expect(!rules.isExcluded(path: "keep.yaml", isDirectory: false))
        #expect(!rules.isExcluded(path: "a/keep.yaml", isDirectory: false))
        let reversed = IgnoreRules(userPatterns: IgnorePattern.parse("!keep.yaml\n*.yaml\n"))
        #expect(reversed.isExcluded(path: "keep.yaml", isDirectory: false))
        // VCS patterns are lowest priority, so a user "!" pattern can bring them back.
        let reinclude = IgnoreRules(userPatterns: [IgnorePattern(line: "!.gitignore")])
        #expect(!reinclude.isExcluded(path: ".gitignore", isDirectory: false))
        #expect(reinclude.isExcluded(path: ".git/config", isDirectory: false))
    }

    @Test func ignoreFilesScopedAndOrdered() {
        let rules = IgnoreRules(
            ignoreFiles: [
                (["deploy"], "!keep.yaml\n"),
                (["a", "b"], "*.yaml\n"),
                ([], "deploy/*.yaml\n"),
            ],
            specIgnore: "deploy/override.yaml"
        )
        #expect(rules.patterns.map(\.description) == [
            ":.git/", ":.gitignore", ":.gitmodules", ":.gitattributes",
            ":deploy/*.yaml", "/a/b:*.yaml", "/deploy:!keep.yaml", ":deploy/override.yaml",
        ])
        #expect(rules.isExcluded(path: "deploy/x.yaml", isDirectory: false))
        #expect(!rules.isExcluded(path: "deploy/keep.yaml", isDirectory: false))
        #expect(rules.isExcluded(path: "a/b/x.yaml", isDirectory: false))
        #expect(rules.isExcluded(path: "a/b/c/x.yaml", isDirectory: false))
        #expect(!rules.isExcluded(path: "a/x.yaml", isDirectory: false))
        #expect(!rules.isExcluded(path: "x.yaml", isDirectory: false))
        #expect(rules.isExcluded(path: "deploy/override.yaml", isDirectory: false))
    }

    /// fluxcd/pkg sourceignore_test.go TestReadPatterns.
    @Test func fluxReadPatterns() {
        let simple = IgnoreRules(matchingExactly: IgnorePattern.parse("ignore-dir/*\n!ignore-dir/include\n"))
        #expect(simple.isExcluded(path: "ignore-dir/file.yaml", isDirectory: false))
        #expect(!simple.isExcluded(path: "file.yaml", isDirectory: false))
        #expect(!simple.isExcluded(path: "ignore-dir/include", isDirectory: false))

        let comments = IgnoreRules(matchingExactly: IgnorePattern.parse("ignore-dir/*\n# !ignore-dir/include"))
        #expect(comments.isExcluded(path: "ignore-dir/file.yaml", isDirectory: false))
        #expect(comments.isExcluded(path: "ignore-dir/include", isDirectory: false))

        let scoped = IgnoreRules(matchingExactly: IgnorePattern.parse("ignore-dir/*", domain: ["domain", "scoped"]))
        #expect(scoped.isExcluded(path: "domain/scoped/ignore-dir/file.yaml", isDirectory: false))
        #expect(!scoped.isExcluded(path: "ignore-dir/file.yaml", isDirectory: false))
    }

    /// fluxcd/pkg sourceignore_test.go TestVCSPatterns / TestDefaultPatterns (domain cases).
    @Test func fluxDomainScopedDefaults() {
        let vcs = IgnoreRules(matchingExactly: IgnoreRules.vcsPatterns(domain: ["directory"]))
        #expect(vcs.isExcluded(path: "directory/.git/config", isDirectory: false))
        #expect(vcs.isExcluded(path: "directory/.gitignore", isDirectory: false))
        #expect(!vcs.isExcluded(path: "other/.git/config", isDirectory: false))
        let defaults = IgnoreRules(matchingExactly: IgnoreRules.defaultPatterns(domain: ["directory"]))
        #expect(defaults.isExcluded(path: "directory/image.jpg", isDirectory: false))
        #expect(defaults.isExcluded(path: "directory/archive.tar.gz", isDirectory: false))
        #expect(!defaults.isExcluded(path: "other/image.jpg", isDirectory: false))
        #expect(!defaults.isExcluded(path: "other/archive.tar.gz", isDirectory: false))
    }

    /// LoadIgnorePatterns walks depth-first with byte-wise sorted names and skips `.git`.
    /// (fluxcd/pkg TestLoadExcludePatterns: root, a/b, z.)
    @Test func loadingOrder() {
        #expect(IgnoreRules.loadingOrder([["z"], ["a", "b"], []]) == [[], ["a", "b"], ["z"]])
        // Not a full-path string sort: "a-b" > "a" component-wise although "a-b/" < "a/b".
        #expect(IgnoreRules.loadingOrder([["a-b"], ["a", "b"], ["a"], ["B"]]) == [["B"], ["a"], ["a", "b"], ["a-b"]])
        #expect(IgnoreRules.loadingOrder([[".git"], ["x", ".git", "y"], [".github"]]) == [[".github"]])
    }

    @Test func componentsSplitLikeGo() {
        #expect(IgnoreRules.components(of: "a/b/c") == ["a", "b", "c"])
        #expect(IgnoreRules.components(of: "") == [""])
        #expect(IgnoreRules.components(of: "a//b/") == ["a", "", "b", ""])
        // Splits on the byte even before a combining mark (a Character-based split would not).
        #expect(IgnoreRules.components(of: "a/\u{301}b") == ["a", "\u{301}b"])
    }

    @Test func fingerprintIsStableAndCapturesTheDefaultsSwitch() {
        let defaults = IgnoreRules(userPatterns: [])
        #expect(defaults.fingerprint == IgnoreRules(userPatterns: []).fingerprint)
        #expect(defaults.descriptionLines.first == ":.git/")
        #expect(defaults.descriptionLines.count == 24)
        #expect(defaults.fingerprint.hasPrefix("relay-sourceignore/v1\n:.git/\n"))
        let user = IgnoreRules(userPatterns: [IgnorePattern(line: "*.png")])
        #expect(user.fingerprint != defaults.fingerprint)
        #expect(user.descriptionLines == [":.git/", ":.gitignore", ":.gitmodules", ":.gitattributes", ":*.png"])
        let scoped = IgnoreRules(userPatterns: [IgnorePattern(line: "*.png", domain: ["a"])])
        #expect(scoped.fingerprint != user.fingerprint)
    }

    @Test func typesAreSendable() {
        let values: [any Sendable] = [
            IgnoreRules(userPatterns: []), IgnorePattern(line: "x"), IgnoreMatchResult.exclude,
            GlobMatch.BadPattern(),
        ]
        #expect(values.count == 4)
    }
}
