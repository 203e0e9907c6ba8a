// The complete exclusion filter source-controller applies when it archives a GitRepository.
//
// Follows fluxcd/pkg `sourceignore/sourceignore.go` (constants, `VCSPatterns`,
// `DefaultPatterns`, `NewDefaultMatcher`, `LoadIgnorePatterns`), `sourceignore/gitignore/
// matcher.go`, and `artifact/storage/archive.go` `SourceIgnoreFilter`. See
// shared/spec/flux-artifacts.md sections 1.2 and 1.5.

/// Decides which repository paths Flux leaves out of a GitRepository artifact.
///
/// How Flux builds the filter (`SourceIgnoreFilter(ps, domain)`):
/// - `ps`, the *user patterns*, are every `.sourceignore` in the checkout (root file first,
///   then subdirectories depth-first in byte-wise name order, `.git` skipped; see
///   ``loadingOrder(_:)``), each scoped to its own directory, followed by `.spec.ignore`
///   scoped to the root.
/// - With **no** user patterns the matcher is VCS + Ext + CI + Extra defaults.
/// - With **at least one** user pattern it is VCS + user patterns only: the image/archive,
///   CI and Extra defaults are dropped. (An ignore file holding only comments or blank lines
///   contributes no pattern and so does not switch the defaults off.)
/// - Later patterns win: the matcher scans from the last pattern back and the first one that
///   matches decides.
///
/// Paths are components relative to the repository root (`["deploy", "app.yaml"]`). The root
/// itself is `[]` and is never excluded. The filter is asked about every walked entry
/// separately; excluding a directory does not by itself skip its children, but patterns that
/// match a directory also match everything below it (see ``IgnorePattern``).
public struct IgnoreRules: Sendable {
    // MARK: Flux constants (sourceignore.go)

    /// Name of the per-directory ignore file. The file itself is not excluded by anything.
    public static let ignoreFileName = ".sourceignore"
    /// `sourceignore.ExcludeVCS`: always applied.
    public static let excludeVCS = ".git/,.gitignore,.gitmodules,.gitattributes"
    /// `sourceignore.ExcludeExt`.
    public static let excludeExt = "*.jpg,*.jpeg,*.gif,*.png,*.wmv,*.flv,*.tar.gz,*.zip"
    /// `sourceignore.ExcludeCI`.
    public static let excludeCI = ".github/,.circleci/,.travis.yml,.gitlab-ci.yml,appveyor.yml,.drone.yml,cloudbuild.yaml,codeship-services.yml,codeship-steps.yml"
    /// `sourceignore.ExcludeExtra`.
    public static let excludeExtra = "**/.goreleaser.yml,**/.sops.yaml,**/.flux.yaml"

    /// `sourceignore.VCSPatterns(domain)`: the `excludeVCS` list, split on `,`.
    public static func vcsPatterns(domain: [String] = []) -> [IgnorePattern] {
        patterns(fromList: excludeVCS, domain: domain)
    }

    /// `sourceignore.DefaultPatterns(domain)`: Ext, then CI, then Extra.
    public static func defaultPatterns(domain: [String] = []) -> [IgnorePattern] {
        patterns(fromList: [excludeExt, excludeCI, excludeExtra].joined(separator: ","), domain: domain)
    }

    private static func patterns(fromList list: String, domain: [String]) -> [IgnorePattern] {
        list.split(separator: ",", omittingEmptySubsequences: false)
            .map { IgnorePattern(line: String($0), domain: domain) }
    }

    private static let rootVCSPatterns = vcsPatterns()
    private static let rootDefaultPatterns = defaultPatterns()

    // MARK: The matcher

    /// Every pattern the matcher consults, lowest priority first (the last match wins).
    public let patterns: [IgnorePattern]
    /// Whether the Ext/CI/Extra defaults are in force (true exactly when there were no user
    /// patterns).
    public let usesDefaultExclusions: Bool

    /// Flux's `SourceIgnoreFilter(userPatterns, rootDomain)`.
    ///
    /// - Parameter userPatterns: the `.sourceignore` patterns in ``loadingOrder(_:)`` order,
    ///   then the `.spec.ignore` patterns (domain `[]`). Empty means "use all defaults".
    public init(userPatterns: [IgnorePattern]) {
        if userPatterns.isEmpty {
            self.patterns = Self.rootVCSPatterns + Self.rootDefaultPatterns
            self.usesDefaultExclusions = true
        } else {
            self.patterns = Self.rootVCSPatterns + userPatterns
            self.usesDefaultExclusions = false
        }
    }

    /// A plain matcher over exactly `patterns` (go-git's `gitignore.NewMatcher`), with no
    /// defaults added. Useful for tests and for non-Flux uses.
    public init(matchingExactly patterns: [IgnorePattern]) {
        self.patterns = patterns
        self.usesDefaultExclusions = false
    }

    /// Builds the filter from ignore-file contents the way source-controller does:
    /// `LoadIgnorePatterns` over the tree, then `.spec.ignore`, then ``init(userPatterns:)``.
    ///
    /// - Parameters:
    ///   - ignoreFiles: each `.sourceignore` found, as the directory holding it (components
    ///     relative to the root, `[]` for the root) and its text. Order does not matter: they
    ///     are put in ``loadingOrder(_:)`` order, and files under a `.git` directory are
    ///     dropped, as Flux never descends into one.
    ///   - specIgnore: the GitRepository's `.spec.ignore`, if set.
    public init(ignoreFiles: [(directory: [String], contents: String)], specIgnore: String? = nil) {
        let order = Self.loadingOrder(ignoreFiles.map(\.directory))
        var remaining = ignoreFiles.map { (key: $0.directory.map { Array($0.utf8) }, file: $0) }
        var user: [IgnorePattern] = []
        for directory in order {
            let key = directory.map { Array($0.utf8) }
            guard let index = remaining.firstIndex(where: { $0.key == key }) else { continue }
            let file = remaining.remove(at: index).file
            user += IgnorePattern.parse(file.contents, domain: file.directory)
        }
        if let specIgnore {
            user += IgnorePattern.parse(specIgnore, domain: [])
        }
        self.init(userPatterns: user)
    }

    /// The order in which `LoadIgnorePatterns` reads `.sourceignore` files: a directory before
    /// its subdirectories, siblings in byte-wise name order (a depth-first walk, which is *not*
    /// the same as sorting full path strings: `a/b` comes before `a-b`). Directories with a
    /// `.git` component are removed, since Flux skips every directory named `.git`.
    public static func loadingOrder(_ directories: [[String]]) -> [[String]] {
        directories
            .filter { !$0.contains { $0.utf8.elementsEqual(".git".utf8) } }
            .map { (directory: $0, key: $0.map { Array($0.utf8) }) }
            .sorted { lhs, rhs in
                lhs.key.lexicographicallyPrecedes(rhs.key) { $0.lexicographicallyPrecedes($1) }
            }
            .map(\.directory)
    }

    /// Whether Flux would leave `path` out of the artifact (go-git `matcher.Match`): scan the
    /// patterns from last to first; the first that matches decides (exclude → `true`,
    /// `!`-include → `false`); no match → `false`.
    ///
    /// - Parameters:
    ///   - path: components relative to the repository root; `[]` is the root.
    ///   - isDirectory: whether the entry is a directory (matters for patterns ending in `/`).
    public func isExcluded(_ path: [String], isDirectory: Bool) -> Bool {
        let bytes = path.map { Array($0.utf8) }
        for pattern in patterns.reversed() {
            switch pattern.match(bytes: bytes, isDirectory: isDirectory) {
            case .noMatch: continue
            case .exclude: return true
            case .include: return false
            }
        }
        return false
    }

    /// ``isExcluded(_:isDirectory:)`` for a `/`-separated relative path (`"deploy/app.yaml"`),
    /// split on every `/` byte the way Flux splits paths (so `""` is one empty component).
    public func isExcluded(path: String, isDirectory: Bool) -> Bool {
        isExcluded(Self.components(of: path), isDirectory: isDirectory)
    }

    /// Go's `strings.Split(path, "/")`, on bytes.
    public static func components(of path: String) -> [String] {
        Array(path.utf8)
            .split(separator: GlobMatch.separator, omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
    }

    // MARK: Cache keys

    /// One line per effective pattern, lowest priority first, each the pattern's
    /// ``IgnorePattern/description`` (`<domain>:<source line>`, e.g. `:.git/`,
    /// `/a/b:!keep.yaml`). Two rule sets with equal lines behave identically, so callers can
    /// hash these into artifact cache keys. The defaults are listed when in force, so the
    /// defaults switch is captured too.
    public var descriptionLines: [String] {
        patterns.map(\.description)
    }

    /// A single stable string for cache keys: a format tag line followed by
    /// ``descriptionLines``, joined with `\n` (the lines never contain a raw newline).
    /// Hash it (e.g. SHA-256) rather than storing it, as it can be long.
    public var fingerprint: String {
        (["relay-sourceignore/v1"] + descriptionLines).joined(separator: "\n")
    }
}
