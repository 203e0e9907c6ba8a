import ArtifactMirror
import Foundation

/// Whether a relay-agent process is running on a data directory: it holds the status
/// journal's lock for its whole life. CLIs then go through its inbox instead of the files.
public enum AgentDataDirectory {
    public static func runningAgentHoldsIt(_ config: ResolvedAgentConfig) -> Bool {
        let lock = config.dataDirectory.appendingPathComponent("journal/.lock").path
        let fd = open(lock, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return errno == EWOULDBLOCK }
        flock(fd, LOCK_UN)
        return false
    }
}

/// The answer to an inbox request or a dropped bundle: `<name>.result.json` in the inbox.
public struct InboxResult: Sendable, Codable, Equatable {
    public var ok: Bool
    /// "ok", or the refusal's stable code.
    public var code: String
    public var message: String
    public var imported: BundleImportSummary?
    public var status: StatusExportSummary?

    public init(ok: Bool, code: String, message: String, imported: BundleImportSummary? = nil, status: StatusExportSummary? = nil) {
        self.ok = ok
        self.code = code
        self.message = message
        self.imported = imported
        self.status = status
    }
}

/// Requests handed to a running agent through its private request directory
/// (`<dataDir>/requests`, never the inbox): a JSON file renamed into place, answered by
/// `<name>.result.json` beside it.
/// - `<name>.export-status.json`: `{"output": "<absolute path>"}` (relay-agent export-status)
/// - `<name>.import.json`: `{"files": ["<absolute path>", …], "allowExpired": false}` (relay-agent import)
public enum InboxRequest {
    public static let exportStatusSuffix = ".export-status.json"
    public static let importSuffix = ".import.json"
    public static let resultSuffix = ".result.json"

    struct ExportStatus: Codable { var output: String }
    struct Import: Codable { var files: [String]; var allowExpired: Bool? }

    public enum Failure: Error, CustomStringConvertible {
        case io(String)
        case timedOut(inbox: String, seconds: Int)
        public var description: String {
            switch self {
            case .io(let detail): detail
            case .timedOut(let inbox, let seconds):
                "the running agent did not answer within \(seconds) s (inbox \(inbox)): is its inbox watcher running? see its log"
            }
        }
    }

    /// Asks the running agent to write a status bundle to `output` and waits for its answer.
    public static func exportStatus(inbox: URL, output: URL, timeout: Duration = .seconds(120)) throws -> InboxResult {
        try submit(inbox: inbox, suffix: exportStatusSuffix, body: try JSONEncoder().encode(ExportStatus(output: output.path)), timeout: timeout)
    }

    /// Asks the running agent to import the bundle in `files` (absolute paths) and waits.
    public static func importBundle(inbox: URL, files: [String], allowExpired: Bool, timeout: Duration = .seconds(600)) throws -> InboxResult {
        try submit(inbox: inbox, suffix: importSuffix, body: try JSONEncoder().encode(Import(files: files, allowExpired: allowExpired)), timeout: timeout)
    }

    /// Creates `directory` as 0700, or checks it is: a directory this user owns that no one else
    /// may write. Returns false when it is not private.
    public static func preparePrivateDirectory(_ directory: URL) -> Bool {
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var info = stat()
        guard stat(directory.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == geteuid() else { return false }
        if info.st_mode & 0o077 != 0 { return chmod(directory.path, 0o700) == 0 }
        return true
    }

    /// Writes the request under a hidden name, renames it into place, and polls for the result.
    public static func submit(inbox: URL, suffix: String, body: Data, timeout: Duration) throws -> InboxResult {
        guard preparePrivateDirectory(inbox) else { throw Failure.io("\(inbox.path) is not a private directory of this user (mode 0700)") }
        let name = "request-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let request = inbox.appendingPathComponent(name + suffix)
        let result = inbox.appendingPathComponent(name + resultSuffix)
        do { try FileSystem.writeAtomically(body, to: request.path) } catch { throw Failure.io("cannot write \(request.path): \(error)") }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let data = FileManager.default.contents(atPath: result.path), let answer = try? JSONDecoder().decode(InboxResult.self, from: data) {
                unlink(result.path)
                return answer
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        unlink(request.path)
        throw Failure.timedOut(inbox: inbox.path, seconds: Int(timeout.components.seconds))
    }
}
