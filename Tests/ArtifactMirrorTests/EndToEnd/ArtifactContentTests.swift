import Foundation
import Testing
@testable import ArtifactMirror

/// What goes into an artifact: the fixture repository packed and read back by GNU tar and
/// Python's tarfile, compared with `git ls-tree -r` minus the exclusions Flux makes.
@Suite struct ArtifactContentTests {
    @Test func defaultExclusionsNormalizedHeadersAndBothReadersAgree() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fixture = try FixtureRepository.create(at: dir.appending("repo"))
        let harness = try PackHarness()
        defer { harness.remove() }

        let result = try await harness.pack(dir.appending("repo").path, .branch("main"))
        #expect(result.revision == "main@sha1:\(fixture.commit)")
        #expect(result.commit == fixture.commit)
        #expect(Set(result.skipped) == Set(FixtureRepository.expectedSkipped))
        let tree = try fixture.tree()
        let expectedFiles = tree.filter { $0.value.mode.hasPrefix("1007") || $0.value.mode == "100644" }.count
            - FixtureRepository.defaultExclusions.count
        #expect(result.files == expectedFiles)

        let artifact = URL(fileURLWithPath: result.path)
        let data = try Data(contentsOf: artifact)
        #expect(result.digest == "sha256:" + sha256Hex(data))
        #expect(result.size == UInt64(data.count))

        let problems = try ArtifactAssertions.check(
            artifact: artifact, tree: tree, excluded: FixtureRepository.defaultExclusions,
            excludedDirectories: FixtureRepository.excludedDirectories)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")

        // Only the two names that cannot be USTAR get PAX headers; the long ASCII one is split.
        let report = try TarballReport.read(artifact)
        let paxNames = report.entries.filter { $0.paxHeaders["path"] != nil }.map(\.name)
        #expect(Set(paxNames) == [FixtureRepository.longUnsplittable, "configs/größe-café.yaml", "日本語", "日本語/設定.yaml"])
        #expect(report.entries.first { $0.name == FixtureRepository.longSplittable }?.ustarPrefixUsed == true)

        #expect(try TarballVerifier(expectedDigest: result.digest).verify(file: result.path).ok)
    }

    @Test func sourceIgnoreFilesAndExtraPatternsReplaceTheDefaults() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fixture = try FixtureRepository.create(at: dir.appending("repo"))
        try fixture.repo.write(".sourceignore", "# root rules\n*.md\n/charts/\n")
        try fixture.repo.write("apps/.sourceignore", "service.yaml\n")
        try fixture.repo.write("sub/.sourceignore", "*.yaml\n!b.yaml\n")
        let commit = try fixture.repo.commit("ignore rules")
        let harness = try PackHarness()
        defer { harness.remove() }

        let result = try await harness.pack(dir.appending("repo").path, .branch("main"),
                                            ignore: "deep/\n!charts/values.yaml\n")
        #expect(result.revision == "main@sha1:\(commit)")
        let tree = try FixtureRepository(repo: fixture.repo, commit: commit).tree()
        // With user patterns, only the VCS defaults remain: images, CI files and
        // .sops.yaml come back; the user's own rules apply with their scope and priority.
        let excluded: Set<String> = [
            ".gitignore", ".gitattributes",  // VCS: always
            "README.md",  // root .sourceignore
            "charts/app.tar.gz",  // /charts/ (root) — values.yaml re-included by the extra pattern
            "apps/podinfo/service.yaml",  // apps/.sourceignore, scoped to apps/
            "deep/a/.sops.yaml", "deep/a/b/c/d/e.yaml",  // extra pattern deep/
        ]
        let problems = try ArtifactAssertions.check(
            artifact: URL(fileURLWithPath: result.path), tree: tree, excluded: excluded,
            excludedDirectories: ["charts", "deep", "deep/a", "deep/a/b", "deep/a/b/c", "deep/a/b/c/d"])
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        let names = Set(try TarballReport.read(URL(fileURLWithPath: result.path)).entries.map(\.name))
        #expect(names.contains("logo.png") && names.contains(".github/workflows/ci.yml") && names.contains(".sourceignore"))
        #expect(names.contains("sub/b.yaml"), "a later !b.yaml in the same file re-includes it")
    }

    @Test func sameCommitGivesTheSameBytesFromAFreshCacheAndAnyThreadCount() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try FixtureRepository.create(at: dir.appending("repo"))
        let source = dir.appending("repo").path
        let first = try PackHarness()
        let second = try PackHarness()
        defer { first.remove(); second.remove() }

        let a = try await first.pack(source, .branch("main"), threads: 1)
        let b = try await second.pack(source, .branch("main"), threads: 4)
        #expect(a.digest == b.digest)
        #expect(!a.cached && !b.cached)
        #expect(try Data(contentsOf: URL(fileURLWithPath: a.path)) == Data(contentsOf: URL(fileURLWithPath: b.path)))
        // And from a warm cache into a fresh store: same digest again.
        let third = try PackHarness()
        defer { third.remove() }
        let c = try await ArtifactPacker(cacheDirectory: first.cache, store: third.store, compressionThreads: 2)
            .pack(PackRequest(remote: try RemoteLocation(source), reference: .branch("main")))
        #expect(c.digest == a.digest && !c.cached)
    }
}

/// Trees that `git` itself would never write, crafted object by object.
@Suite struct HostileTreeTests {
    @Test func dotDotAndBackslashNamesAreLeftOutAndReported() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        try repo.write("ok.yaml", "ok: 1\n")
        _ = try repo.commit("init")
        let blob = try repo.git(["rev-parse", "HEAD:ok.yaml"])
        // A tree with entries "..", "a\\b" and "ok.yaml", written with --literally (git refuses such trees).
        let script = """
            import binascii, subprocess, sys
            blob = binascii.unhexlify(sys.argv[1])
            entries = [(b"..", blob), (b"a\\\\b", blob), (b"ok.yaml", blob)]
            data = b"".join(b"100644 " + name + b"\\0" + oid for name, oid in entries)
            print(subprocess.run(["git", "hash-object", "-w", "-t", "tree", "--literally", "--stdin"],
                                 input=data, capture_output=True, check=True).stdout.decode().strip())
            """
        let tree = try runProcess("/usr/bin/env", ["python3", "-c", script, blob], in: repo.url,
                                  environment: GitIdentity.environment()).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let commit = try repo.git(["commit-tree", tree, "-m", "hostile"])
        _ = try repo.git(["update-ref", "refs/heads/hostile", commit])

        let harness = try PackHarness()
        defer { harness.remove() }
        let result = try await harness.pack(repo.url.path, .branch("hostile"))
        #expect(Set(result.skipped) == [SkippedPath(path: "..", reason: .unsafeName),
                                        SkippedPath(path: "a\\b", reason: .backslashInName)])
        #expect(result.files == 1)
        let report = try TarballVerifier(expectedDigest: result.digest).verify(file: result.path)
        #expect(report.ok, "\(report.errors)")
    }
}
