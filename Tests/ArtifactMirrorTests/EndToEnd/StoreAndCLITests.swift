import Foundation
import Testing
@testable import ArtifactMirror

/// The built `artifact-mirror` binary.
enum CLI {
    static let path: String = {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("artifact-mirror"),
            Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/artifact-mirror"),
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }?.path ?? candidates[1].path
    }()
}

@Suite struct StoreAndCLITests {
    @Test func cacheHitAndRetention() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        let source = dir.appending("repo").path
        let harness = try PackHarness(retention: 2)
        defer { harness.remove() }

        var results: [PackResult] = []
        for n in 1...3 {
            try repo.write("a.yaml", "n: \(n)\n")
            _ = try repo.commit("commit \(n)")
            results.append(try await harness.pack(source, .branch("main")))
        }
        let hit = try await harness.pack(source, .branch("main"))
        #expect(hit.cached && hit.digest == results[2].digest && hit.path == results[2].path)
        // With different extra ignore patterns it is a different artifact.
        let filtered = try await harness.pack(source, .branch("main"), ignore: "*.yaml\n")
        #expect(!filtered.cached && filtered.digest != results[2].digest)

        // Retention 2: the two most recently used survive; the first commit's file is gone.
        #expect(!FileManager.default.fileExists(atPath: results[0].path))
        #expect(!FileManager.default.fileExists(atPath: results[1].path))
        #expect(FileManager.default.fileExists(atPath: results[2].path))
        let records = try harness.store.allRecords()
        #expect(records.count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: harness.store.root.appendingPathComponent("tmp").path).isEmpty)
    }

    @Test func packPrintsTheDocumentedJSONAndVerifyAgrees() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fixture = try FixtureRepository.create(at: dir.appending("repo"))
        let out = try runProcess(CLI.path, ["pack", dir.appending("repo").path, "--branch", "main",
                                            "--cache", dir.appending("cache").path, "--output", dir.appending("store").path, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as! [String: Any]
        for key in ["revision", "digest", "size", "path", "commit", "files", "skipped", "cached", "source"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["revision"] as? String == "main@sha1:\(fixture.commit)")
        let path = try #require(object["path"] as? String)
        let digest = try #require(object["digest"] as? String)
        #expect(digest == "sha256:" + sha256Hex(try Data(contentsOf: URL(fileURLWithPath: path))))
        let skipped = try #require(object["skipped"] as? [[String: String]])
        #expect(Set(skipped.map { $0["path"]! }) == ["current", "vendor/lib"])

        #expect(try runProcess(CLI.path, ["verify", path, "--digest", digest]).status == 0)
        let wrong = try runProcess(CLI.path, ["verify", path, "--digest", "sha256:" + String(repeating: "0", count: 64)],
                                   allowFailure: true)
        #expect(wrong.status == 8)
        #expect(wrong.stdout.contains("digest mismatch"))
    }

    @Test func cliErrorsNameTheCauseAndExitWithItsStatus() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        try repo.write("a.yaml", "a: 1\n")
        _ = try repo.commit("init")
        let common = ["--cache", dir.appending("cache").path, "--output", dir.appending("store").path, "--json"]

        let unknown = try runProcess(CLI.path, ["pack", dir.appending("repo").path, "--tag", "v9"] + common, allowFailure: true)
        #expect(unknown.status == 3)
        #expect(unknown.stdout.contains("\"code\":\"unknown_ref\""))
        #expect(unknown.stderr.contains("error: unknown ref: tag 'v9'"))

        let notRepo = try runProcess(CLI.path, ["pack", dir.url.path, "--branch", "main"] + common, allowFailure: true)
        #expect(notRepo.status == 6, "\(notRepo.stderr)")

        let conflicting = try runProcess(CLI.path, ["pack", "x", "--tag", "a", "--branch", "b", "--output", "o"], allowFailure: true)
        #expect(conflicting.status != 0)
        #expect(conflicting.stderr.contains("choose one of"))
    }

    @Test func tokenAndPasswordFilesOverHTTP() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("work"))
        try repo.write("a.yaml", "a: 1\n")
        let commit = try repo.commit("init")
        let root = try dir.subdirectory("served")
        _ = try repo.makeBare(into: root, name: "repo.git")
        let http = try HTTPGitServer(root: root, username: "oauth2", password: "glpat-secret")
        defer { http.stop() }
        let token = dir.appending("token")
        try Data("glpat-secret\n".utf8).write(to: token)
        let wrong = dir.appending("wrong")
        try Data("nope\n".utf8).write(to: wrong)
        let common = ["--branch", "main", "--cache", dir.appending("cache").path, "--output", dir.appending("store").path, "--json"]

        let ok = try runProcess(CLI.path, ["pack", http.url(for: "repo.git"), "--token-file", token.path] + common)
        #expect(ok.stdout.contains("main@sha1:\(commit)"))
        let password = try runProcess(CLI.path, ["pack", http.url(for: "repo.git"), "--username", "oauth2",
                                                 "--password-file", token.path] + common)
        #expect(password.stdout.contains("\"cached\":true"))
        let rejected = try runProcess(CLI.path, ["pack", http.url(for: "repo.git"), "--token-file", wrong.path] + common,
                                      allowFailure: true)
        #expect(rejected.status == 4)
        #expect(rejected.stdout.contains("authentication_failed"))
        #expect(!rejected.stderr.contains("nope") && !rejected.stdout.contains("nope"), "secrets never echoed")
        let missing = try runProcess(CLI.path, ["pack", http.url(for: "repo.git"), "--token-file", dir.appending("absent").path] + common,
                                     allowFailure: true)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("--token-file"))
    }
}
