import ArtifactMirror
import Foundation
import Logging

/// What becomes of a stored artifact that no longer hashes to its digest (found while
/// serving it): the file moves out of the store into `<dataDir>/quarantine/` (the newest
/// `keep` kept for inspection), the store forgets it as an older revision, the agent fetches
/// it again from the relay, and it is counted (`relay_agent_corrupt_artifacts_total`),
/// logged and reported to the relay's timeline (event reason `ArtifactCorrupt`).
public final class ArtifactQuarantine: Sendable {
    let store: ArtifactStore
    let directory: URL
    let reporter: AgentIncidents
    let keep: Int
    /// Asks the tunnel to fetch what the store now lacks.
    let refetch: @Sendable () -> Void

    init(store: ArtifactStore, directory: URL, reporter: AgentIncidents, keep: Int = 5, refetch: @escaping @Sendable () -> Void) {
        self.store = store
        self.directory = directory
        self.reporter = reporter
        self.keep = keep
        self.refetch = refetch
    }

    /// Quarantines the file stored under `digest` if it is still the one that was served
    /// (`file`); returns whether it did (a second reader of the same bad file finds it gone).
    /// Blocking file work: call it on the thread pool.
    func quarantine(digest: String, actual: String, file: VerifiedFileStream.FileIdentity) -> Bool {
        let hex = digest.replacingOccurrences(of: "sha256:", with: "")
        let destination = directory.appendingPathComponent("\(hex).tar.gz.\(Int64(Date().timeIntervalSince1970 * 1000))")
        let holders: [ArtifactRecord]
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            guard let moved = try store.quarantine(digest: digest, device: file.device, inode: file.inode, to: destination.path) else {
                return false
            }
            holders = moved
        } catch {
            reporter.logger.error("cannot quarantine a corrupt artifact", metadata: ["digest": "\(digest)", "error": "\(error)"])
            return false
        }
        AgentMetrics.corruptArtifacts.increment()
        let record = holders.first
        reporter.report(code: "artifact_corrupt", reason: "ArtifactCorrupt", source: record?.source ?? "", revision: record?.revision ?? "",
                        digest: digest, message: "stored artifact hashes to \(actual): changed at rest; the download was cut short, "
                            + "the file quarantined (\(destination.lastPathComponent)) and is being fetched again from the relay")
        prune()
        refetch()
        return true
    }

    /// Keeps the newest `keep` quarantined files.
    private func prune() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        let dated = names.compactMap { name -> (String, Int64)? in
            guard let stamp = name.split(separator: ".").last.flatMap({ Int64($0) }) else { return nil }
            return (name, stamp)
        }
        for (name, _) in dated.sorted(by: { $0.1 > $1.1 }).dropFirst(keep) {
            unlink(directory.appendingPathComponent(name).path)
        }
    }
}
