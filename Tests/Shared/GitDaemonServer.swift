// `git daemon` on 127.0.0.1 serving every repository under `root` over git://.

import Foundation

final class GitDaemonServer: Sendable {
    let root: URL
    let port: Int
    /// Scratch directory holding the daemon's log; removed by `stop()`.
    let directory: TemporaryDirectory
    private let process: BackgroundProcess

    /// Start `git daemon --export-all --base-path=<root>` on a free loopback port
    /// and wait (≤ `timeout` s) until it accepts connections.
    /// `informativeErrors` passes `--informative-errors` (the daemon then tells
    /// clients "no such repository" instead of "access denied or repository not exported").
    init(root: URL, informativeErrors: Bool = false, timeout: Double = 10) throws {
        let root = root.standardizedFileURL.resolvingSymlinksInPath()
        let directory = try TemporaryDirectory(prefix: "git-daemon")
        let gitPath = findExecutable("git") ?? "/usr/bin/git"
        do {
            (port, process) = try startServer(name: "git daemon", timeout: timeout) { port in
                var args = [
                    "daemon", "--reuseaddr", "--export-all", "--enable=upload-pack", "--verbose",
                    "--base-path=\(root.path)", "--listen=127.0.0.1", "--port=\(port)",
                ]
                if informativeErrors { args.append("--informative-errors") }
                args.append(root.path)
                return try BackgroundProcess(
                    name: "git daemon", executable: gitPath, arguments: args,
                    logFile: directory.appending("git-daemon.\(port).log"),
                    environment: GitIdentity.environment())
            }
        } catch {
            directory.remove()
            throw error
        }
        self.root = root
        self.directory = directory
    }

    /// `git://127.0.0.1:<port>/<repoName>`
    func url(for repoName: String) -> String { "git://127.0.0.1:\(port)/\(repoName)" }

    /// The daemon's stdout/stderr so far.
    func log() -> String { process.log() }

    /// Kill the daemon, wait for it, remove its scratch directory. Idempotent.
    func stop() {
        process.stop()
        directory.remove()
    }
}
