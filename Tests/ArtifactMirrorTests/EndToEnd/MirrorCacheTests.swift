import Foundation
import Synchronization
import Testing
@testable import ArtifactMirror

/// The mirror cache survives damage, interruption and concurrent use.
@Suite struct MirrorCacheTests {
    private func mirrorPath(_ harness: PackHarness, _ remote: String) throws -> String {
        try MirrorCache(root: harness.cache).mirrorPath(for: RemoteLocation(remote))
    }

    @Test func corruptMirrorIsDetectedAndRebuilt() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        try repo.write("a.yaml", String(repeating: "line: value\n", count: 2000))
        _ = try repo.commit("one")
        let source = dir.appending("repo").path
        let harness = try PackHarness()
        defer { harness.remove() }
        let first = try await harness.pack(source, .branch("main"))

        // Damage every pack and loose object of the mirror.
        let mirror = try mirrorPath(harness, source)
        let objects = URL(fileURLWithPath: mirror).appendingPathComponent("objects")
        let enumerator = FileManager.default.enumerator(at: objects, includingPropertiesForKeys: nil)!
        var damaged = 0
        for case let file as URL in enumerator where !file.hasDirectoryPath && file.lastPathComponent != "packs" {
            if (try? file.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                try? FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
                try Data("garbage".utf8).write(to: file)
                damaged += 1
            }
        }
        #expect(damaged > 0)

        // A fresh store forces a re-pack from the damaged mirror.
        let second = try PackHarness()
        defer { second.remove() }
        let log = EventLog()
        let again = try await ArtifactPacker(cacheDirectory: harness.cache, store: second.store, compressionThreads: 2,
                                             events: { if case .rebuildingMirror(let why) = $0 { log.append(why) } })
            .pack(PackRequest(remote: try RemoteLocation(source), reference: .branch("main")))
        #expect(again.digest == first.digest)
        #expect(log.entries.contains { $0.contains("damaged") }, "\(log.entries)")
        _ = try git(["fsck", "--full"], in: URL(fileURLWithPath: mirror))
    }

    @Test func halfCreatedMirrorIsRebuilt() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        try repo.write("a.yaml", "a: 1\n")
        _ = try repo.commit("one")
        let source = dir.appending("repo").path
        let harness = try PackHarness()
        defer { harness.remove() }
        _ = try await harness.pack(source, .branch("main"))
        let mirror = try mirrorPath(harness, source)
        try FileManager.default.removeItem(atPath: mirror + "/" + MirrorCache.markerName)
        // A stale ref lock from a killed fetch must not block the next one either.
        try Data().write(to: URL(fileURLWithPath: mirror + "/refs/heads/main.lock"))

        try repo.write("a.yaml", "a: 2\n")
        let second = try repo.commit("two")
        let result = try await harness.pack(source, .branch("main"))
        #expect(result.revision == "main@sha1:\(second)")
        #expect(harness.events.contains { $0.contains("never completed") }, "\(harness.events)")
        #expect(FileManager.default.fileExists(atPath: mirror + "/" + MirrorCache.markerName))
    }

    @Test func concurrentPacksOfOneRemoteFromSeveralProcesses() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fixture = try FixtureRepository.create(at: dir.appending("repo"))
        let root = try dir.subdirectory("served")
        _ = try fixture.repo.makeBare(into: root, name: "fixture.git")
        let daemon = try GitDaemonServer(root: root)
        defer { daemon.stop() }
        let cache = dir.appending("cache").path
        let store = dir.appending("store").path

        // Four processes share one cache and one store, all starting at once on an empty cache.
        // (Threads, not tasks: the cooperative pool has only as many threads as cores.)
        let collected = Mutex<[ProcessOutput]>([])
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                if let output = try? runProcess(CLI.path, ["pack", daemon.url(for: "fixture.git"), "--branch", "main",
                                                           "--cache", cache, "--output", store, "--json"], timeout: 120) {
                    collected.withLock { $0.append(output) }
                }
                group.leave()
            }
        }
        group.wait()
        let outputs = collected.withLock { $0 }
        #expect(outputs.count == 4, "every process succeeds")
        let results = try outputs.map { try JSONDecoder().decode(PackResult.self, from: Data($0.stdout.utf8)) }
        #expect(Set(results.map(\.digest)).count == 1)
        #expect(results.allSatisfy { $0.revision == "main@sha1:\(fixture.commit)" })
        #expect(results.filter { !$0.cached }.count >= 1)
        let mirrors = try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasSuffix(".git") }
        #expect(mirrors.count == 1, "\(mirrors)")
        _ = try git(["fsck", "--full"], in: URL(fileURLWithPath: cache).appendingPathComponent(mirrors[0]))
        let problems = try ArtifactAssertions.check(
            artifact: URL(fileURLWithPath: results[0].path), tree: fixture.tree(),
            excluded: FixtureRepository.defaultExclusions, excludedDirectories: FixtureRepository.excludedDirectories)
        #expect(problems.isEmpty, "\(problems)")
    }
}
