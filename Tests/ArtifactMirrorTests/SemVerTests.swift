import Foundation
import Testing
@testable import ArtifactMirror

// Expected values in the first two tables are Masterminds semver v3's own test data
// (constraints_test.go: TestConstraintCheck and TestConstraintsCheck), which is the ground
// truth Flux inherits. Rows for the empty constraint are covered by `emptyConstraintIsRejected`.

private struct SemVerCheckCase: Sendable, CustomTestStringConvertible {
    let constraint: String
    let version: String
    let expected: Bool
    var testDescription: String { "'\(constraint)' vs \(version) → \(expected)" }
}

private func row(_ constraint: String, _ version: String, _ expected: Bool) -> SemVerCheckCase {
    SemVerCheckCase(constraint: constraint, version: version, expected: expected)
}

/// Masterminds TestConstraintCheck: one comparator each.
private let semVerSingleComparatorCases: [SemVerCheckCase] = [
    row("=2.0.0", "1.2.3", false), row("=2.0.0", "2.0.0", true),
    row("=2.0", "1.2.3", false), row("=2.0", "2.0.0", true), row("=2.0", "2.0.1", true),
    row("4.1", "4.1.0", true),
    row("!=4.1.0", "4.1.0", false), row("!=4.1.0", "4.1.1", true),
    row("!=4.1", "4.1.0", false), row("!=4.1", "4.1.1", false),
    row("!=4.1", "5.1.0-alpha.1", false), row("!=4.1-alpha", "4.1.0", true),
    row("!=4.1", "5.1.0", true),
    row("<11", "0.1.0", true), row("<11", "11.1.0", false),
    row("<1.1", "0.1.0", true), row("<1.1", "1.1.0", false), row("<1.1", "1.1.1", false),
    row("<=11", "1.2.3", true), row("<=11", "12.2.3", false), row("<=11", "11.2.3", true),
    row("<=1.1", "1.2.3", false), row("<=1.1", "0.1.0", true),
    row("<=1.1", "1.1.0", true), row("<=1.1", "1.1.1", true),
    row(">1.1", "4.1.0", true), row(">1.1", "1.1.0", false),
    row(">0", "0", false), row(">0", "1", true),
    row(">0", "0.0.1-alpha", false), row(">0.0", "0.0.1-alpha", false),
    row(">0-0", "0.0.1-alpha", false), row(">0.0-0", "0.0.1-alpha", false),
    row(">0", "0.0.0-alpha", false), row(">0-0", "0.0.0-alpha", false),
    row(">0.0.0-0", "0.0.0-alpha", true),
    row(">1.2.3-alpha.1", "1.2.3-alpha.2", true), row(">1.2.3-alpha.1", "1.3.3-alpha.2", true),
    row(">11", "11.1.0", false), row(">11.1", "11.1.0", false),
    row(">11.1", "11.1.1", false), row(">11.1", "11.2.1", true),
    row(">=11", "11.1.2", true), row(">=11.1", "11.1.2", true), row(">=11.1", "11.0.2", false),
    row(">=1.1", "4.1.0", true), row(">=1.1", "1.1.0", true), row(">=1.1", "0.0.9", false),
    row(">=0", "0.0.1-alpha", false), row(">=0.0", "0.0.1-alpha", false),
    row(">=0-0", "0.0.1-alpha", true), row(">=0.0-0", "0.0.1-alpha", true),
    row(">=0", "0.0.0-alpha", false), row(">=0-0", "0.0.0-alpha", true),
    row(">=0.0.0-0", "0.0.0-alpha", true), row(">=0.0.0-0", "1.2.3", true),
    row(">=0.0.0-0", "3.4.5-beta.1", true),
    row("<0", "0.0.0-alpha", false), row("<0-z", "0.0.0-alpha", true),
    row(">=0", "0", true), row("=0", "1", false),
    row("*", "1", true), row("*", "4.5.6", true), row("*", "1.2.3-alpha.1", false),
    row("*-0", "1.2.3-alpha.1", true),
    row("2.*", "1", false), row("2.*", "3.4.5", false), row("2.*", "2.1.1", true),
    row("2.1.*", "2.1.1", true), row("2.1.*", "2.2.1", false),
    row("2", "1", false), row("2", "3.4.5", false), row("2", "2.1.1", true),
    row("2.1", "2.1.1", true), row("2.1", "2.2.1", false),
    row("~1.2.3", "1.2.4", true), row("~1.2.3", "1.3.4", false),
    row("~1.2", "1.2.4", true), row("~1.2", "1.3.4", false),
    row("~1", "1.2.4", true), row("~1", "2.3.4", false),
    row("~0.2.3", "0.2.5", true), row("~0.2.3", "0.3.5", false),
    row("~1.2.3-beta.2", "1.2.3-beta.4", true), row("~1.2.3-beta.2", "1.2.4-beta.2", true),
    row("~1.2.3-beta.2", "1.3.4-beta.2", false),
    row("^1.2.3", "1.8.9", true), row("^1.2.3", "2.8.9", false), row("^1.2.3", "1.2.1", false),
    row("^1.1.0", "2.1.0", false), row("^1.2.0", "2.2.1", false),
    row("^1.2.0", "1.2.1-alpha.1", false), row("^1.2.0-alpha.0", "1.2.1-alpha.1", true),
    row("^1.2.0-alpha.0", "1.2.1-alpha.0", true), row("^1.2.0-alpha.2", "1.2.0-alpha.1", false),
    row("^1.2", "1.8.9", true), row("^1.2", "2.8.9", false),
    row("^1", "1.8.9", true), row("^1", "2.8.9", false),
    row("^0.2.3", "0.2.5", true), row("^0.2.3", "0.5.6", false),
    row("^0.2", "0.2.5", true), row("^0.2", "0.5.6", false),
    row("^0.0.3", "0.0.3", true), row("^0.0.3", "0.0.4", false),
    row("^0.0", "0.0.3", true), row("^0.0", "0.1.4", false), row("^0.0", "1.0.4", false),
    row("^0", "0.2.3", true), row("^0", "1.1.4", false),
    row("^0.2.3-beta.2", "0.2.3-beta.4", true), row("^0.2.3-beta.2", "0.2.4-beta.2", true),
    row("^0.2.3-beta.2", "0.3.4-beta.2", false), row("^0.2.3-beta.2", "0.2.3-beta.2", true),
]

/// Masterminds TestConstraintsCheck: whole constraint strings (AND, OR, ranges, spacing).
private let semVerConstraintStringCases: [SemVerCheckCase] = [
    row("*", "1.2.3", true), row("~0.0.0", "1.2.3", true), row("0.x.x", "1.2.3", false),
    row("0.0.x", "1.2.3", false), row("0.0.0", "1.2.3", false), row("^0.0.0", "1.2.3", false),
    row("= 2.0", "1.2.3", false), row("= 2.0", "2.0.0", true),
    row("4.1", "4.1.0", true), row("4.1.x", "4.1.3", true), row("1.x", "1.4", true),
    row("!=4.1", "4.1.0", false), row("!=4.1-alpha", "4.1.0-alpha", false),
    row("!=4.1-alpha", "4.1.1-alpha", false), row("!=4.1-alpha", "4.1.0", true),
    row("!=4.1", "5.1.0", true), row("!=4.x", "5.1.0", true), row("!=4.x", "4.1.0", false),
    row("!=4.1.x", "4.2.0", true), row("!=4.2.x", "4.2.3", false),
    row(">1.1", "4.1.0", true), row(">1.1", "1.1.0", false),
    row("<1.1", "0.1.0", true), row("<1.1", "1.1.0", false), row("<1.1", "1.1.1", false),
    row("<1.x", "1.1.1", false), row("<1.x", "0.1.1", true), row("<1.x", "2.0.0", false),
    row("<1.1.x", "1.2.1", false), row("<1.1.x", "1.1.500", false),
    row("<1.1.x", "1.0.500", true), row("<1.2.x", "1.1.1", true),
    row(">=1.1", "4.1.0", true), row(">=1.1", "4.1.0-beta", false),
    row(">=1.1", "1.1.0", true), row(">=1.1", "0.0.9", false),
    row("<=1.1", "0.1.0", true), row("<=1.1", "0.1.0-alpha", false),
    row("<=1.1-a", "0.1.0-alpha", true), row("<=1.1", "1.1.0", true),
    row("<=1.x", "1.1.0", true), row("<=2.x", "3.0.0", false), row("<=1.1", "1.1.1", true),
    row("<=1.1.x", "1.2.500", false), row("<=4.5", "3.4.0", true),
    row("<=4.5", "3.7.0", true), row("<=4.5", "4.6.3", false),
    row(">1.1, <2", "1.1.1", false), row(">1.1, <2", "1.2.1", true),
    row(">1.1, <3", "4.3.2", false), row(">=1.1, <2, !=1.2.3", "1.2.3", false),
    row(">1.1 <2", "1.1.1", false), row(">1.1 <2", "1.2.1", true),
    row(">1.1    <3", "4.3.2", false), row(">=1.1    <2    !=1.2.3", "1.2.3", false),
    row(">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
    row(">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
    row(">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", true),
    row(">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
    row(">=1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
    row(">=1.1 <2 !=1.2.3", "1.2.3", false), row(">=1.1 <2 !=1.2.3 || > 3", "4.1.2", true),
    row(">=1.1 <2 !=1.2.3 || > 3", "3.1.2", false),
    row(">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", true),
    row(">=1.1 <2 !=1.2.3 || > 3", "3.0.0", false),
    row(">=1.1 <2 !=1.2.3 || > 3", "1.2.3", false),
    row("> 1.1, <     2", "1.1.1", false), row(">   1.1, <2", "1.2.1", true),
    row(">1.1, <  3", "4.3.2", false), row(">= 1.1, <     2, !=1.2.3", "1.2.3", false),
    row("> 1.1 < 2", "1.1.1", false), row(">1.1 < 2", "1.2.1", true),
    row("> 1.1    <3", "4.3.2", false), row(">=1.1    < 2    != 1.2.3", "1.2.3", false),
    row(">= 1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
    row(">= 1.1, <2, != 1.2.3 || > 3", "3.1.2", false),
    row(">= 1.1, <2, != 1.2.3 || >= 3", "3.0.0", true),
    row(">= 1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
    row(">= 1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
    row(">= 1.1 <2 != 1.2.3", "1.2.3", false), row(">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", true),
    row(">= 1.1 <2 != 1.2.3 || > 3", "3.1.2", false),
    row(">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", true),
    row(">= 1.1 < 2 !=1.2.3 || > 3", "3.0.0", false),
    row(">=1.1 < 2 !=1.2.3 || > 3", "1.2.3", false),
    row("1.1 - 2", "1.1.1", true), row("1.5.0 - 4.5", "3.7.0", true), row("1.1-3", "4.3.2", false),
    row("^1.1", "1.1.1", true), row("^1.1", "4.3.2", false), row("^1.x", "1.1.1", true),
    row("^2.x", "1.1.1", false), row("^1.x", "2.1.1", false), row("^1.x", "1.1.1-beta1", false),
    row("^1.1.2-alpha", "1.2.1-beta1", true), row("^1.2.x-alpha", "1.1.1-beta1", false),
    row("^0.0.1", "0.0.1", true), row("^0.0.1", "0.3.1", false),
    row("~*", "2.1.1", true), row("~1", "2.1.1", false), row("~1", "1.3.5", true),
    row("~1", "1.4", true), row("~1.x", "2.1.1", false), row("~1.x", "1.3.5", true),
    row("~1.x", "1.4", true), row("~1.1", "1.1.1", true), row("~1.1", "1.1.1-alpha", false),
    row("~1.1-alpha", "1.1.1-beta", true), row("~1.1.1-beta", "1.1.1-alpha", false),
    row("~1.1.1-beta", "1.1.1", true), row("~1.2.3", "1.2.5", true), row("~1.2.3", "1.2.2", false),
    row("~1.2.3", "1.3.2", false), row("~1.1", "1.2.3", false), row("~1.3", "2.4.5", false),
    // From TestConstraintsValidate (same Check semantics).
    row("<2.x", "1.1.1", true), row("~1", "1.3.5-beta", false), row("~1.x", "1.3.5-beta", false),
    row("~1.3.6-alpha", "1.3.5-beta", false), row("~1.3.5-alpha", "1.3.5-beta", true),
    row("^1.1.1-alpha", "1.1.1-beta", true), row("^1.1.1-beta", "1.1.1-alpha", false),
]

/// Cases named in the Relay brief and further edge cases (derived from the rules above).
private let semVerBriefCases: [SemVerCheckCase] = [
    // Pre-release rule (Masterminds issue 21).
    row(">=1.0.0", "1.1.0-rc.1", false), row(">=1.0.0-0", "1.1.0-rc.1", true),
    row(">=1.0.0-0 <2.0.0", "1.1.0-rc.1", false), row(">=1.0.0-0 <2.0.0-0", "1.1.0-rc.1", true),
    row("!=1.2.3", "1.2.4-beta", true), row("!=1.2.x", "1.3.0-beta", false),
    // Hyphen ranges, including versions with pre-releases and `v`.
    row("1.2 - 1.4.5", "1.4.5", true), row("1.2 - 1.4.5", "1.4.6", false),
    row("1.2 - 1.4.5", "1.2.0", true), row("1.2 - 1.4.5", "1.1.9", false),
    row("v1.0.0-alpha - v1.0.0", "1.0.0-beta", false), row("1.0.0-0 - 1.0.0-z", "1.0.0-beta", true),
    row(">=3 || 1 - 2", "2.0.0", true), row("1 - 2", "2.5.0", true), row("1 - 2", "3.0.0", false),
    row("1 - 2", "0.9.0", false),
    // Dirty `>` and `<=`.
    row(">11", "12.0.0", true), row(">11.1", "12.0.0", true), row(">11.1", "10.9.0", false),
    row("<=1.2", "1.2.9", true), row("<=1.2", "1.3.0", false), row("<=1", "1.9.9", true),
    row("<=1", "2.0.0", false), row(">*", "0.0.1", true), row(">*", "0.0.0", false),
    // Tilde forms.
    row("~>1.2.3", "1.2.9", true), row("~>1.2.3", "1.3.0", false), row("~1", "1.9.0", true),
    row("~0.0.0", "9.9.9", true), row("~0", "1.0.0", false), row("~0.0", "0.1.0", false),
    // Bare and `=` with wildcards act as `~`; without, as equality.
    row("1.2.x", "1.2.7", true), row("1.2.X", "1.3.0", false), row("=1.*", "1.9.9", true),
    row("1.2.3", "1.2.3+build.7", true), row("=1.2.3", "1.2.4", false),
    // Caret at zero.
    row("^0.0", "0.0.0", true), row("^0", "0.9.9", true), row("^0.0.3", "0.0.3", true),
    row("^*", "0.0.0", true), row("^*", "1.0.0", false),
    // Wildcard `!=`.
    row("!=1.2.x", "1.2.9", false), row("!=1.2.x", "1.1.9", true), row("!=1.x", "2.0.0", true),
    row("!=*", "0.0.0", false), row("!=*", "0.0.1", true),
    // Operators `=>`/`=<`, `v` prefixes and whitespace.
    row("=> 1.2", "1.2.0", true), row("=< 1.2.3", "1.2.4", false), row("v1.2.3", "1.2.3", true),
    row(">= v1.2", "1.2.0", true), row("~ v1.2", "1.2.5", true), row("\t>=1,\n<2 ", "1.5.0", true),
    row("1.2.3 1.2.4", "1.2.3", false), row("1.0 || 2.0", "2.0.5", true),
    // Odd but upstream-faithful: a `|` in a wildcard-ignored position.
    row("1.x.|", "1.5.0", true),
]

private struct SemVerSyntaxCase: Sendable, CustomTestStringConvertible {
    let constraint: String
    let alternatives: Int
    let firstCount: Int
    var testDescription: String { "'\(constraint)'" }
}

private struct SemVerStringCase: Sendable, CustomTestStringConvertible {
    let input: String
    let expected: String?
    var testDescription: String { "'\(input)'" }
}

@Suite("SemVer (Masterminds semver v3 semantics, as in Flux)")
struct SemVerTests {
    private static func satisfied(_ constraint: String, _ version: String) throws -> Bool {
        let parsed = try SemVerConstraint(constraint)
        let version = try #require(SemanticVersion(lenient: version), "version \(version)")
        return parsed.isSatisfied(by: version)
    }

    // MARK: Constraint checks

    @Test("Masterminds TestConstraintCheck", arguments: semVerSingleComparatorCases)
    fileprivate func singleComparator(_ testCase: SemVerCheckCase) throws {
        #expect(try Self.satisfied(testCase.constraint, testCase.version) == testCase.expected)
    }

    @Test("Masterminds TestConstraintsCheck", arguments: semVerConstraintStringCases)
    fileprivate func constraintString(_ testCase: SemVerCheckCase) throws {
        #expect(try Self.satisfied(testCase.constraint, testCase.version) == testCase.expected)
    }

    @Test("Brief cases and edge cases", arguments: semVerBriefCases)
    fileprivate func briefCase(_ testCase: SemVerCheckCase) throws {
        #expect(try Self.satisfied(testCase.constraint, testCase.version) == testCase.expected)
    }

    @Test("Pre-release policy: per comparator (v3.2–3.3) vs per alternative (v3.4)")
    func prereleasePolicies() throws {
        let cases: [(constraint: String, version: String, perComparator: Bool, perAlternative: Bool)] = [
            (">1.0.0-beta.1 < 2", "1.5.0-rc.1", false, true),
            (">1.0.0-beta.1 < 2 || > 3", "3.5.0-rc.1", false, false),
            (">1.0.0-beta.1 < 2 || > 3", "1.5.0-rc.1", false, true),
            ("!=1.2.3", "1.2.4-beta", true, false),
            (">=1.0.0-0", "1.1.0-rc.1", true, true),
            (">=1.0.0", "1.1.0-rc.1", false, false),
            (">=1.0.0 <2", "1.5.0", true, true),
        ]
        for item in cases {
            let version = try #require(SemanticVersion(lenient: item.version))
            let strict = try SemVerConstraint(item.constraint)
            let grouped = try SemVerConstraint(item.constraint, prereleasePolicy: .perAlternative)
            #expect(strict.isSatisfied(by: version) == item.perComparator, "\(item.constraint) \(item.version)")
            #expect(grouped.isSatisfied(by: version) == item.perAlternative, "\(item.constraint) \(item.version)")
        }
    }

    // MARK: Constraint syntax

    @Test("Masterminds TestNewConstraint: alternatives and comparators", arguments: [
        SemVerSyntaxCase(constraint: ">= 1.1", alternatives: 1, firstCount: 1),
        SemVerSyntaxCase(constraint: ">40.50.60, < 50.70", alternatives: 1, firstCount: 2),
        SemVerSyntaxCase(constraint: "2.0", alternatives: 1, firstCount: 1),
        SemVerSyntaxCase(constraint: "v2.3.5-20161202202307-sha.e8fc5e5", alternatives: 1, firstCount: 1),
        SemVerSyntaxCase(constraint: ">= 1.2.3 < 2.0", alternatives: 1, firstCount: 2),
        SemVerSyntaxCase(constraint: ">= 1.2.3 < 2.0 || => 3.0 < 4", alternatives: 2, firstCount: 2),
        SemVerSyntaxCase(constraint: ">= 1.2.3, < 2.0", alternatives: 1, firstCount: 2),
        SemVerSyntaxCase(constraint: ">= 1.2.3, < 2.0 || => 3.0, < 4", alternatives: 2, firstCount: 2),
        SemVerSyntaxCase(constraint: "3 - 4 || => 3.0, < 4", alternatives: 2, firstCount: 2),
        SemVerSyntaxCase(constraint: "12.3.34 ~1.2.3", alternatives: 1, firstCount: 2),
    ])
    fileprivate func constraintShape(_ testCase: SemVerSyntaxCase) throws {
        let constraint = try SemVerConstraint(testCase.constraint)
        #expect(constraint.alternatives.count == testCase.alternatives)
        #expect(constraint.alternatives.first?.count == testCase.firstCount)
    }

    @Test("Invalid constraints throw", arguments: [
        ">= bar", "BAR >= 1.2.3", "12.3.4.1234", "12.23.4.1234", "12.3.34.1234", "12.3.34~ 1.2.3",
        "   ", "1.2 -", ">=1.2,", ",>=1.2", ">=1.2,,<2", "! 1.2", "!1.2", "=> ", "1.2 || ", "|| 1.2",
        ">==1", "> =1", "= >1", "1.2.3>=2", "V1.2", "1.2.3-", "1.2.3+", "1.2.3-a..b", "1.2.",
        "1 - 2 1 - 2", "1|2", "1.2.3|", "xx", "1.2.xx", "1.x2", ">=1.2.3-01", ">=99999999999999999999",
    ])
    func invalidConstraint(_ text: String) {
        #expect(throws: SemVerConstraintError.self) { try SemVerConstraint(text) }
    }

    @Test("The empty constraint is rejected, as by NewConstraint")
    func emptyConstraintIsRejected() {
        #expect(throws: SemVerConstraintError(constraint: "", part: "", reason: .malformed)) {
            try SemVerConstraint("")
        }
    }

    @Test("Errors name the offending part")
    func errorMessages() {
        #expect(throws: SemVerConstraintError(
            constraint: ">=1 || >= bar", part: " >= bar", reason: .malformed
        )) { try SemVerConstraint(">=1 || >= bar") }
        let malformed = SemVerConstraintError(constraint: "x", part: ">= bar", reason: .malformed)
        #expect(malformed.description == "improper constraint: >= bar")
        #expect(throws: SemVerConstraintError(
            constraint: ">=1, <1|2", part: "<1|2", reason: .invalidVersion
        )) { try SemVerConstraint(">=1, <1|2") }
        do {
            _ = try SemVerConstraint("^1 || 1.2.3.4")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "improper constraint:  1.2.3.4")
        }
    }

    @Test("Masterminds TestRewriteRange and normalized descriptions", arguments: [
        SemVerStringCase(input: "2 - 3", expected: ">= 2, <= 3"),
        SemVerStringCase(input: "2 - 3, 2 - 3", expected: ">= 2, <= 3,>= 2, <= 3"),
        SemVerStringCase(input: "2 - 3, 4.0.0 - 5.1", expected: ">= 2, <= 3,>= 4.0.0, <= 5.1"),
        SemVerStringCase(input: ">=0 || 1 - 2", expected: ">=0 ||>= 1, <= 2"),
        SemVerStringCase(input: "1.2-1.4.5", expected: "1.2-1.4.5"),
        SemVerStringCase(input: "1 - 2 1 - 2", expected: ">= 1, <= 2>= 1, <= 2"),
    ])
    fileprivate func rewriteRange(_ testCase: SemVerStringCase) {
        let output = SemVerConstraintSyntax.rewritingHyphenRanges(Array(testCase.input.utf8))
        #expect(String(decoding: output, as: UTF8.self) == testCase.expected)
    }

    @Test("description prints op+version, space-separated, ' || ' between alternatives")
    func constraintDescription() throws {
        #expect(try SemVerConstraint("1.2 - 1.4.5").description == ">=1.2 <=1.4.5")
        #expect(try SemVerConstraint(">= 1.2.3, < 2.0 || => 3.0 < 4").description == ">=1.2.3 <2.0 || =>3.0 <4")
        #expect(try SemVerConstraint("~> v1.x-rc.1+meta").description == "~>v1.x-rc.1+meta")
        #expect(try SemVerConstraint(" ^1 ").text == " ^1 ")
    }

    // MARK: Versions

    @Test("Masterminds TestNewVersion (lenient parsing)", arguments: [
        SemVerStringCase(input: "1.2.3", expected: "1.2.3"),
        SemVerStringCase(input: "1.2.3-alpha.01", expected: nil),
        SemVerStringCase(input: "1.2.3+test.01", expected: "1.2.3+test.01"),
        SemVerStringCase(input: "1.2.3-alpha.-1", expected: "1.2.3-alpha.-1"),
        SemVerStringCase(input: "v1.2.3", expected: "1.2.3"),
        SemVerStringCase(input: "1.0", expected: "1.0.0"),
        SemVerStringCase(input: "v1.0", expected: "1.0.0"),
        SemVerStringCase(input: "1", expected: "1.0.0"),
        SemVerStringCase(input: "v1", expected: "1.0.0"),
        SemVerStringCase(input: "1.2.beta", expected: nil),
        SemVerStringCase(input: "v1.2.beta", expected: nil),
        SemVerStringCase(input: "foo", expected: nil),
        SemVerStringCase(input: "1.2-5", expected: "1.2.0-5"),
        SemVerStringCase(input: "v1.2-5", expected: "1.2.0-5"),
        SemVerStringCase(input: "1.2-beta.5", expected: "1.2.0-beta.5"),
        SemVerStringCase(input: "v1.2-beta.5", expected: "1.2.0-beta.5"),
        SemVerStringCase(input: "\n1.2", expected: nil),
        SemVerStringCase(input: "\nv1.2", expected: nil),
        SemVerStringCase(input: "1.2.0-x.Y.0+metadata", expected: "1.2.0-x.Y.0+metadata"),
        SemVerStringCase(input: "v1.2.0-x.Y.0+metadata-width-hypen", expected: "1.2.0-x.Y.0+metadata-width-hypen"),
        SemVerStringCase(input: "v1.2.3-rc1-with-hypen", expected: "1.2.3-rc1-with-hypen"),
        SemVerStringCase(input: "1.2.3.4", expected: nil),
        SemVerStringCase(input: "12.3.4.1234", expected: nil),
        SemVerStringCase(input: "1.2.2147483648", expected: "1.2.2147483648"),
        SemVerStringCase(input: "2147483648.3.0", expected: "2147483648.3.0"),
        SemVerStringCase(input: "20221209-update-renovatejson-v4", expected: "20221209.0.0-update-renovatejson-v4"),
        SemVerStringCase(input: "01.02.03", expected: "1.2.3"),
        SemVerStringCase(input: "18446744073709551615.0.0", expected: "18446744073709551615.0.0"),
        SemVerStringCase(input: "18446744073709551616.0.0", expected: nil),
        SemVerStringCase(input: "", expected: nil),
        SemVerStringCase(input: "v", expected: nil),
        SemVerStringCase(input: "V1.2.3", expected: nil),
        SemVerStringCase(input: " 1.2.3", expected: nil),
        SemVerStringCase(input: "1.2.3 ", expected: nil),
        SemVerStringCase(input: "1.2.3-", expected: nil),
        SemVerStringCase(input: "1.2.3-a..b", expected: nil),
        SemVerStringCase(input: "1.2.3+", expected: nil),
        SemVerStringCase(input: "1.2.3+a+b", expected: nil),
        SemVerStringCase(input: "1.2.3-a_b", expected: nil),
        SemVerStringCase(input: "1.x", expected: nil),
    ])
    fileprivate func lenientParsing(_ testCase: SemVerStringCase) {
        let version = SemanticVersion(lenient: testCase.input)
        #expect(version?.description == testCase.expected)
        if let version { #expect(version.original == testCase.input) }
    }

    @Test("Flux ParseVersion for tag names (strict SemVer plus one optional v)", arguments: [
        // fluxcd/pkg version_test.go
        SemVerStringCase(input: "v1.2.3", expected: "1.2.3"),
        SemVerStringCase(input: "v1.0", expected: nil),
        SemVerStringCase(input: "v1", expected: nil),
        SemVerStringCase(input: "v1.2.beta", expected: nil),
        SemVerStringCase(input: "v1.2-5", expected: nil),
        SemVerStringCase(input: "v1.2-beta.5", expected: nil),
        SemVerStringCase(input: "\nv1.2", expected: nil),
        SemVerStringCase(input: "v1.2.0-x.Y.0+metadata", expected: "1.2.0-x.Y.0+metadata"),
        SemVerStringCase(input: "v1.2.0-x.Y.0+metadata-width-hypen", expected: "1.2.0-x.Y.0+metadata-width-hypen"),
        SemVerStringCase(input: "v1.2.3-rc1-with-hypen", expected: "1.2.3-rc1-with-hypen"),
        SemVerStringCase(input: "v1.2.3.4", expected: nil),
        // Masterminds TestStrictNewVersion (without `v`)
        SemVerStringCase(input: "1.2.3-alpha.01", expected: nil),
        SemVerStringCase(input: "1.2.3+test.01", expected: "1.2.3+test.01"),
        SemVerStringCase(input: "1.2.3-alpha.-1", expected: "1.2.3-alpha.-1"),
        SemVerStringCase(input: "1.0", expected: nil),
        SemVerStringCase(input: "1", expected: nil),
        SemVerStringCase(input: "foo", expected: nil),
        SemVerStringCase(input: "1.2.2147483648", expected: "1.2.2147483648"),
        SemVerStringCase(input: "20221209-update-renovatejson-v4", expected: nil),
        // Further strictness
        SemVerStringCase(input: "01.2.3", expected: nil),
        SemVerStringCase(input: "v1.02.3", expected: nil),
        SemVerStringCase(input: "1.2.03", expected: nil),
        SemVerStringCase(input: "0.0.0", expected: "0.0.0"),
        SemVerStringCase(input: "vv1.2.3", expected: nil),
        SemVerStringCase(input: "V1.2.3", expected: nil),
        SemVerStringCase(input: "v1.2.3-", expected: nil),
        SemVerStringCase(input: "v1.2.3-rc..1", expected: nil),
        SemVerStringCase(input: "latest", expected: nil),
    ])
    fileprivate func tagNameParsing(_ testCase: SemVerStringCase) {
        let version = SemanticVersion(tagName: testCase.input)
        #expect(version?.description == testCase.expected)
        if let version { #expect(version.original == testCase.input) }
    }

    @Test("Components of a parsed version")
    func components() throws {
        let version = try #require(SemanticVersion(lenient: "v1.2.3-beta.1+build.123"))
        #expect(version.major == 1 && version.minor == 2 && version.patch == 3)
        #expect(version.prerelease == "beta.1")
        #expect(version.metadata == "build.123")
        #expect(version.original == "v1.2.3-beta.1+build.123")
        #expect(version.description == "1.2.3-beta.1+build.123")
        #expect(version.isPrerelease)
    }

    @Test("semver.org precedence chain")
    func precedenceChain() throws {
        let chain = [
            "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
            "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0",
        ].map { SemanticVersion(lenient: $0) }
        let versions = try chain.map { try #require($0) }
        for (lower, higher) in zip(versions, versions.dropFirst()) {
            #expect(lower < higher, "\(lower) < \(higher)")
            #expect(!(higher < lower))
        }
        #expect(versions.shuffled().sorted() == versions)
    }

    @Test("Masterminds TestCompare / TestGreaterThan / TestEqual")
    func compareTable() throws {
        let cases: [(String, String, Int)] = [
            ("1.2.3", "1.5.1", -1), ("2.2.3", "1.5.1", 1), ("2.2.3", "2.2.2", 1),
            ("3.2-beta", "3.2-beta", 0), ("1.3", "1.1.4", 1), ("4.2", "4.2-beta", 1),
            ("4.2-beta", "4.2", -1), ("4.2-alpha", "4.2-beta", -1), ("4.2-alpha", "4.2-alpha", 0),
            ("4.2-beta.2", "4.2-beta.1", 1), ("4.2-beta2", "4.2-beta1", 1),
            ("4.2-beta", "4.2-beta.2", -1), ("4.2-beta", "4.2-beta.foo", -1),
            ("4.2-beta.2", "4.2-beta", 1), ("4.2-beta.foo", "4.2-beta", 1), ("1.2+bar", "1.2+baz", 0),
            ("1.0.0-beta.4", "1.0.0-beta.-2", -1), ("1.0.0-beta.-2", "1.0.0-beta.-3", -1),
            ("1.0.0-beta.-3", "1.0.0-beta.5", 1),
            ("3.2.0-beta.1", "3.2.0-beta.5", -1), ("3.2-beta.4", "3.2-beta.2", 1),
            ("7.43.0-SNAPSHOT.99", "7.43.0-SNAPSHOT.103", -1),
            ("7.43.0-SNAPSHOT.FOO", "7.43.0-SNAPSHOT.103", 1),
            ("7.43.0-SNAPSHOT.99", "7.43.0-SNAPSHOT.BAR", -1), ("3.2-beta+foo", "3.2-beta+bar", 0),
            ("1.0.0-Alpha", "1.0.0-alpha", -1), ("1.0.0-99999999999999999999", "1.0.0-a", -1),
        ]
        for (left, right, expected) in cases {
            let l = try #require(SemanticVersion(lenient: left))
            let r = try #require(SemanticVersion(lenient: right))
            #expect(l.precedence(comparedTo: r) == expected, "\(left) vs \(right)")
            #expect(r.precedence(comparedTo: l) == -expected, "\(right) vs \(left)")
            #expect((l == r) == (expected == 0))
        }
    }

    @Test("Equality and hashing follow precedence (metadata and v ignored)")
    func hashing() throws {
        let a = try #require(SemanticVersion(lenient: "v1.0.0+a"))
        let b = try #require(SemanticVersion(lenient: "1.0.0+b"))
        let c = try #require(SemanticVersion(lenient: "1.0.0-rc.1"))
        #expect(a == b)
        #expect(Set([a, b, c]).count == 2)
        #expect(a.original != b.original)
    }

    // MARK: Tag selection

    @Test("Highest matching tag, pre-releases only when asked")
    func selectsHighestTag() throws {
        let tags = ["v1.0.0", "v1.1.0", "v1.2.0-rc.1", "v2.0.0", "latest", "v1.3", "v1.10.0-0", "release-1.9.0"]
        let caret = try SemVerConstraint("^1")
        #expect(SemVerTagSelector.highestTag(matching: caret, among: tags)?.tag == "v1.1.0")
        let withPre = try SemVerConstraint(">=1.2.0-0")
        #expect(SemVerTagSelector.highestTag(matching: withPre, among: tags)?.tag == "v2.0.0")
        let preOnly = try SemVerConstraint(">=1.2.0-0 <2.0.0-0")
        let chosen = try #require(SemVerTagSelector.highestTag(matching: preOnly, among: tags))
        #expect(chosen.tag == "v1.10.0-0")
        #expect(chosen.version.description == "1.10.0-0")
        #expect(SemVerTagSelector.highestTag(matching: try SemVerConstraint("~1.2.0-rc.0"), among: tags)?.tag == "v1.2.0-rc.1")
        // `v1.3` is not a tag Flux parses, even though the constraint `1.3` is fine.
        #expect(SemVerTagSelector.highestTag(matching: try SemVerConstraint("1.3"), among: tags) == nil)
    }

    @Test("Per-comparator pre-release rule in tag selection (and the v3.4 alternative)")
    func selectionPrereleasePolicy() throws {
        let tags = ["1.0.0", "1.1.0-rc.1"]
        let text = ">=1.0.0-0 <2.0.0"
        #expect(SemVerTagSelector.highestTag(matching: try SemVerConstraint(text), among: tags)?.tag == "1.0.0")
        let v34 = try SemVerConstraint(text, prereleasePolicy: .perAlternative)
        #expect(SemVerTagSelector.highestTag(matching: v34, among: tags)?.tag == "1.1.0-rc.1")
    }

    @Test("No match gives nil")
    func noMatch() throws {
        let constraint = try SemVerConstraint("^3")
        #expect(SemVerTagSelector.highestTag(matching: constraint, among: ["v1.0.0", "v2.9.9", "v3.0.0-rc.1"]) == nil)
        #expect(SemVerTagSelector.highestTag(matching: constraint, among: [String]()) == nil)
        #expect(SemVerTagSelector.highestTag(matching: constraint, among: ["main", "v3", "03.0.0"]) == nil)
    }

    @Test("Ties go to the greatest tag name, or to the later commit when times are known")
    func ties() throws {
        let any = try SemVerConstraint(">=0")
        for tags in [["1.0.0", "v1.0.0"], ["v1.0.0", "1.0.0"]] {
            #expect(SemVerTagSelector.highestTag(matching: any, among: tags)?.tag == "v1.0.0")
        }
        #expect(SemVerTagSelector.highestTag(matching: any, among: ["v1.0.0+b", "v1.0.0+a"])?.tag == "v1.0.0+b")
        let early = Date(timeIntervalSince1970: 1_000)
        let late = Date(timeIntervalSince1970: 2_000)
        let candidates = [
            SemVerTagCandidate(name: "v1.0.0", commitTime: early),
            SemVerTagCandidate(name: "1.0.0", commitTime: late),
            SemVerTagCandidate(name: "v0.9.0", commitTime: Date(timeIntervalSince1970: 9_000)),
        ]
        #expect(SemVerTagSelector.highestTag(matching: any, among: candidates)?.tag == "1.0.0")
        let noTimes = candidates.map { SemVerTagCandidate(name: $0.name) }
        #expect(SemVerTagSelector.highestTag(matching: any, among: noTimes)?.tag == "v1.0.0")
    }
}
