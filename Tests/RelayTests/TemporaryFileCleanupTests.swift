// Temporary files a killed process leaves behind are removed at the next start, and only
// those: a real relay-server is killed with SIGKILL while it packages a large repository,
// restarted, and its half-written artifact is gone while a file another live process holds
// (as `artifact-mirror pack` on a shared store does) stays. The agent likewise removes its
// killed writers' leftovers and keeps partial downloads, which it resumes.

import Foundation
import Testing
@testable import RelayShared

#if canImport(Glibc)
import Glibc
#endif

@Suite("Temporary files of killed processes", .serialized)
struct TemporaryFileCleanupTests {
    @Test("kill -9 while packaging, restart: the orphaned temporary artifact is removed, a live writer's file kept")
    func relayRemovesOrphansAtStart() throws {
        let (dir, repo, harness) = try RelayHarness.single("tmp-cleanup")
        defer { harness.shutdown(); dir.remove() }
        // Incompressible, so packaging takes long enough to be caught in the middle.
        let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        try repo.write("blob.bin", random.readData(ofLength: 24 << 20))
        try random.close()
        _ = try repo.commit("large")

        let tmp = dir.appending("relay-data/store/tmp")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        // Another process writing into the shared store: this test process, holding the lock.
        let live = tmp.appendingPathComponent("pack-live-writer.tar.gz.tmp")
        let liveFD = open(live.path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        #expect(liveFD >= 0 && flock(liveFD, LOCK_EX) == 0)
        defer { close(liveFD) }

        try harness.startRelay()
        var orphan: String?
        _ = try harness.waitUntil("the relay writes a temporary artifact", timeout: 30) {
            orphan = try FileManager.default.contentsOfDirectory(atPath: tmp.path).first {
                $0 != live.lastPathComponent && (FileSystemProbe.size(tmp.appendingPathComponent($0)) ?? 0) > 0
            }
            return orphan != nil
        }
        let relay = try #require(harness.relay)
        kill(-relay.pid, SIGKILL)  // the whole process group: supervisor shell and relay-server
        _ = try harness.waitUntil("the relay is gone", timeout: 10) { !relay.isRunning }
        harness.stopRelay()
        let orphanPath = tmp.appendingPathComponent(try #require(orphan))
        #expect(FileManager.default.fileExists(atPath: orphanPath.path), "kill -9 leaves the half-written file")

        try harness.startRelay()  // ports accept only after the start-up sweep
        #expect(!FileManager.default.fileExists(atPath: orphanPath.path), "the killed relay's temporary file is removed")
        #expect(FileManager.default.fileExists(atPath: live.path), "a live writer's temporary file is kept")
    }

    @Test("the agent removes its killed writers' temporary files at start and keeps partial downloads")
    func agentRemovesOrphansAtStart() throws {
        let (dir, _, harness) = try RelayHarness.single("tmp-cleanup-agent")
        defer { harness.shutdown(); dir.remove() }
        let data = dir.appending("agent-edge")
        let orphans = [data.appendingPathComponent("store/tmp/pack-4242-1.tar.gz.tmp"),
                       data.appendingPathComponent("journal/journal.json.4242.1.tmp")]
        let partial = data.appendingPathComponent("partial/\(String(repeating: "ab", count: 32)).part")
        for file in orphans + [partial] {
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(repeating: 7, count: 4096).write(to: file)
        }

        try harness.startRelay()
        try harness.startAgent("edge")
        _ = try harness.waitUntil("the agent publishes", timeout: 30) { try !harness.published("edge").isEmpty }
        for file in orphans {
            #expect(!FileManager.default.fileExists(atPath: file.path), "\(file.lastPathComponent) is removed")
        }
        #expect(FileManager.default.fileExists(atPath: partial.path), "a partial download stays to be resumed")
    }
}

enum FileSystemProbe {
    static func size(_ url: URL) -> UInt64? {
        (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.uint64Value
    }
}
