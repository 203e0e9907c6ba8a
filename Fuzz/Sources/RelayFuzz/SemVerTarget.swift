@testable import ArtifactMirror
import Foundation

/// `ref.semver` constraints (relay.yaml, Masterminds syntax) and the tag versions they are
/// matched against (tag names come from the mirrored repositories).
///
/// Input: one byte picking the pre-release policy, then lines: a constraint, then versions.
///
/// Invariants: a parsed constraint's `description` parses again to the same description and
/// the same answers; a version's `description` parses to an equal version with the same
/// metadata; a tag-name version is a lenient version too; precedence is antisymmetric and
/// transitive, and equal versions have equal hashes and pre-release text (as `hash(into:)`
/// relies on).
enum SemVerTarget {
    static func run(_ input: Data) {
        guard let first = input.first else { return }
        let policy: SemVerConstraint.PrereleasePolicy = first & 1 == 0 ? .perComparator : .perAlternative
        let lines = String(decoding: input.dropFirst(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard let constraintText = lines.first.map(String.init) else { return }

        var versions: [SemanticVersion] = []
        for line in lines.dropFirst().prefix(8) {
            let text = String(line)
            let tag = SemanticVersion(tagName: text)
            if let lenient = SemanticVersion(lenient: text) {
                versions.append(lenient)
                checkRoundTrip(lenient)
                if let tag {
                    require(tag == lenient && tag.metadata == lenient.metadata, "tag \(text) parses differently leniently")
                }
            } else if let tag {
                // Strict SemVer (with at most one `v`) is a subset of the lenient grammar.
                fatalError("tag name \(text) is a version but not a lenient one (\(tag))")
            }
        }
        checkOrder(versions)

        guard let constraint = try? SemVerConstraint(constraintText, prereleasePolicy: policy) else { return }
        let printed = constraint.description
        let again: SemVerConstraint
        do { again = try SemVerConstraint(printed, prereleasePolicy: policy) } catch {
            fatalError("'\(constraintText)' prints as '\(printed)', which does not parse: \(error)")
        }
        require(again.description == printed, "'\(printed)' prints as '\(again.description)'")
        let bounds = constraint.alternatives.joined().map(\.bound)
        for version in versions + bounds.prefix(8) {
            require(constraint.isSatisfied(by: version) == again.isSatisfied(by: version),
                    "'\(constraintText)' and its description '\(printed)' disagree on \(version)")
        }
    }

    private static func checkRoundTrip(_ version: SemanticVersion) {
        guard let again = SemanticVersion(lenient: version.description) else {
            fatalError("\(version.original) prints as \(version.description), which does not parse")
        }
        require(again == version && again.metadata == version.metadata && again.description == version.description,
                "\(version.original) → \(version.description) → \(again.description)")
    }

    private static func checkOrder(_ versions: [SemanticVersion]) {
        for a in versions {
            for b in versions {
                let ab = a.precedence(comparedTo: b), ba = b.precedence(comparedTo: a)
                require(ab.signum() == -ba.signum(), "\(a) vs \(b): \(ab), reverse \(ba)")
                if ab == 0 {
                    require(a.hashValue == b.hashValue && a.prerelease == b.prerelease, "\(a) == \(b) but hash or pre-release differ")
                }
                for c in versions where ab <= 0 && b.precedence(comparedTo: c) <= 0 {
                    require(a.precedence(comparedTo: c) <= 0, "\(a) ≤ \(b) ≤ \(c) but not \(a) ≤ \(c)")
                }
            }
        }
    }
}
