// Test support shared by the git test servers: temporary directories, a git
// CLI runner with a deterministic environment, and `TestRepo` for building
// repositories quickly. Servers: GitDaemonServer.swift, HTTPGitServer.swift,
// SSHGitServer.swift. Process plumbing: TestProcess.swift.

import Foundation

/// A unique directory under the system temporary directory. Not removed
/// automatically (Swift may release objects before the end of scope): call
/// `remove()` in a `defer`, or use `TemporaryDirectory.with { ... }`.
struct TemporaryDirectory: Sendable {
    let url: URL
    var path: String { url.path }

    init(prefix: String = "relay-test") throws {
        let base = FileManager.default.temporaryDirectory.resolvingSymlinksInPath()
        var template = Array(base.appendingPathComponent("\(prefix).XXXXXX").path.utf8CString)
        let made: String? = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
        }
        guard let made else {
            throw CocoaError(.fileWriteUnknown, userInfo: [
                NSLocalizedDescriptionKey: "mkdtemp failed under \(base.path): errno \(errno)"])
        }
        url = URL(fileURLWithPath: made, isDirectory: true)
    }

    func appending(_ component: String) -> URL { url.appendingPathComponent(component) }

    /// Create (with intermediates) and return a subdirectory.
    @discardableResult
    func subdirectory(_ name: String) throws -> URL {
        let dir = url.appendingPathComponent(name, isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    func remove() { try? FileManager.default.removeItem(at: url) }

    static func with<T>(prefix: String = "relay-test", _ body: (TemporaryDirectory) throws -> T) throws -> T {
        let dir = try TemporaryDirectory(prefix: prefix)
        defer { dir.remove() }
        return try body(dir)
    }

    static func with<T>(prefix: String = "relay-test",
                        _ body: (TemporaryDirectory) async throws -> T) async throws -> T {
        let dir = try TemporaryDirectory(prefix: prefix)
        defer { dir.remove() }
        return try await body(dir)
    }
}

/// Absolute path of `name` found in PATH (or the common system directories).
func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
    for dir in dirs where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    return nil
}

/// Fixed identity and clock for deterministic commits.
enum GitIdentity {
    static let name = "Relay Test"
    static let email = "relay-test@example.invalid"
    /// 2024-01-01T00:00:00Z; commit n of a `TestRepo` is dated n minutes later.
    static let baseEpoch = 1_704_067_200

    /// Environment for every git CLI call made by the test helpers: no system
    /// or global config, no prompts, C locale, fixed identity and dates.
    static func environment(epoch: Int = baseEpoch, extra: [String: String] = [:]) -> [String: String] {
        let date = "@\(epoch) +0000"
        var overrides: [String: String?] = [
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": date,
            "LC_ALL": "C", "LANG": "C",
            "SSH_ASKPASS": nil, "DISPLAY": nil,
        ]
        for (key, value) in extra { overrides[key] = value }
        return testEnvironment(overrides)
    }
}

/// Run the git CLI (`git <args>`) in `directory` with the deterministic test
/// environment plus `environment`. Returns stdout without the trailing
/// newline; throws `TestProcessError.nonZeroExit` (carrying stderr) on failure.
@discardableResult
func git(_ args: [String], in directory: URL? = nil, environment: [String: String] = [:],
         timeout: Double = 60) throws -> String {
    var text = try runGit(args, in: directory, environment: environment, timeout: timeout).stdout
    while text.hasSuffix("\n") { text.removeLast() }
    return text
}

/// Like `git(_:in:environment:)` but never throws on a non-zero exit: for
/// tests asserting that a git command fails.
func gitResult(_ args: [String], in directory: URL? = nil, environment: [String: String] = [:],
               timeout: Double = 60) throws -> ProcessOutput {
    try runGit(args, in: directory, environment: environment, timeout: timeout, allowFailure: true)
}

private func runGit(_ args: [String], in directory: URL?, environment: [String: String],
                    timeout: Double, allowFailure: Bool = false) throws -> ProcessOutput {
    try runProcess(
        findExecutable("git") ?? "/usr/bin/git", ["-c", "gc.auto=0", "-c", "maintenance.auto=false"] + args,
        in: directory, environment: GitIdentity.environment(extra: environment),
        timeout: timeout, allowFailure: allowFailure)
}

/// A non-bare repository driven through the git CLI, with deterministic
/// commits (fixed identity; the n-th commit is dated `baseEpoch + n*60`).
final class TestRepo: @unchecked Sendable {
    let url: URL
    private let lock = NSLock()
    private var commitCount = 0

    private init(url: URL) { self.url = url }

    /// `git init -b <initialBranch>` at `url` (created if missing).
    static func create(at url: URL, initialBranch: String = "main") throws -> TestRepo {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        _ = try runGit(["init", "-q", "-b", initialBranch], in: url, environment: [:], timeout: 60)
        return TestRepo(url: url)
    }

    /// Run git in the work tree with this repository's current clock.
    @discardableResult
    func git(_ args: [String], environment: [String: String] = [:]) throws -> String {
        let epoch = lock.withLock { GitIdentity.baseEpoch + commitCount * 60 }
        var env = environment
        env["GIT_AUTHOR_DATE"] = env["GIT_AUTHOR_DATE"] ?? "@\(epoch) +0000"
        env["GIT_COMMITTER_DATE"] = env["GIT_COMMITTER_DATE"] ?? "@\(epoch) +0000"
        var text = try runGit(args, in: url, environment: env, timeout: 60).stdout
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }

    func write(_ path: String, _ contents: String, executable: Bool = false) throws {
        try write(path, Data(contents.utf8), executable: executable)
    }

    func write(_ path: String, _ contents: Data, executable: Bool = false) throws {
        let file = url.appendingPathComponent(path)
        try FileManager.default.createDirectory(
            at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        if (try? FileManager.default.destinationOfSymbolicLink(atPath: file.path)) != nil {
            try FileManager.default.removeItem(at: file)
        }
        try contents.write(to: file)
        try FileManager.default.setAttributes(
            [.posixPermissions: executable ? 0o755 : 0o644], ofItemAtPath: file.path)
    }

    /// Create (or replace) a symbolic link at `path` pointing to `target`
    /// (stored verbatim, usually relative).
    func symlink(_ path: String, target: String) throws {
        let link = url.appendingPathComponent(path)
        try FileManager.default.createDirectory(
            at: link.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: link)
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: target)
    }

    func remove(_ path: String) throws {
        try FileManager.default.removeItem(at: url.appendingPathComponent(path))
    }

    /// Stage everything (`git add -A`: new, changed and deleted files) and
    /// commit (empty commits allowed). Gitlinks (submodule entries added with
    /// `git update-index --cacheinfo 160000,<sha>,<path>` and no directory) are
    /// kept, not staged as deleted. Returns the new commit's SHA.
    @discardableResult
    func commit(_ message: String) throws -> String {
        let gitlinks = try git(["ls-files", "-s", "-z"]).split(separator: "\0").compactMap { entry -> String? in
            guard entry.hasPrefix("160000 "), let tab = entry.firstIndex(of: "\t") else { return nil }
            return ":(exclude,literal)" + entry[entry.index(after: tab)...]
        }
        try git(["add", "-A", "--", "."] + gitlinks)
        lock.withLock { commitCount += 1 }
        try git(["commit", "-q", "--allow-empty", "--no-verify", "-m", message])
        return try revParse("HEAD")
    }

    /// Tag `target` (default HEAD); annotated tags get `message` (default: name).
    func tag(_ name: String, annotated: Bool = false, message: String? = nil, at target: String = "HEAD") throws {
        if annotated {
            try git(["tag", "-a", name, "-m", message ?? name, target])
        } else {
            try git(["tag", name, target])
        }
    }

    func branch(_ name: String, at target: String = "HEAD") throws {
        try git(["branch", name, target])
    }

    /// `git checkout <ref>`, or `git checkout -b <ref>` when `create` is set.
    func checkout(_ ref: String, create: Bool = false) throws {
        try git(create ? ["checkout", "-q", "-b", ref] : ["checkout", "-q", ref])
    }

    func revParse(_ rev: String) throws -> String {
        try git(["rev-parse", "--verify", "\(rev)^{}"])
    }

    func head() throws -> String { try revParse("HEAD") }

    /// `git clone --bare` this repository to `<root>/<name>` (all branches and
    /// tags; HEAD follows the current branch). Returns the bare repo's URL.
    @discardableResult
    func makeBare(into root: URL, name: String) throws -> URL {
        let bare = root.appendingPathComponent(name, isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try git(["clone", "-q", "--bare", "--no-local", url.path, bare.path])
        return bare
    }

    /// Force-update a bare repository made with `makeBare` to this repository's
    /// branches and tags (pruning deleted ones).
    func push(toBare bare: URL) throws {
        try git(["push", "-q", "--force", "--prune", bare.path,
                 "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"])
    }
}
