// TEMPORARY: replaced by the real SemVer and ignore-rule files.
struct SemanticVersion { }
struct SemVerConstraint { init(_ text: String) throws {} }
enum SemVerTagSelector {
    static func highestTag(matching: SemVerConstraint, among tags: [String]) -> (tag: String, version: SemanticVersion)? { nil }
}
struct IgnorePattern: Sendable {
    static func parse(_ text: String, domain: [String]) -> [IgnorePattern] { [] }
}
struct IgnoreRules: Sendable {
    static let ignoreFileName = ".sourceignore"
    init(userPatterns: [IgnorePattern]) {}
    func isExcluded(_ path: [String], isDirectory: Bool) -> Bool { false }
}
