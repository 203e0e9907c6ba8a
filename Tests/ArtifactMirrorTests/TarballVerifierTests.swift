import Foundation
import Testing
@testable import ArtifactMirror

/// Hostile and broken tarballs (made by Python's tarfile and gzip) against Flux's unpack rules.
@Suite struct TarballVerifierTests {
    static let cases: [(file: String, ok: Bool, mentions: String)] = [
        ("good.tar.gz", true, ""),
        ("symlink.tar.gz", true, "drops symlinks"),  // Flux skips them: a warning, not an error
        ("hardlink.tar.gz", false, "hard link"),
        ("dotdot.tar.gz", false, "'../'"),
        ("absolute.tar.gz", false, "absolute path"),
        ("backslash.tar.gz", false, "backslash"),
        ("device.tar.gz", false, "device or FIFO"),
        ("fifo.tar.gz", false, "device or FIFO"),
        ("global-header.tar.gz", false, "global header"),
        ("unreadable-mode.tar.gz", false, "owner read"),
        ("truncated-tar.tar.gz", false, "truncated"),
        ("truncated-gzip.tar.gz", false, "truncated"),
        ("not-gzip.tar.gz", false, "not gzip-compressed"),
    ]

    static func makeTarballs() throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory()
        _ = try runProcess("/usr/bin/env", ["python3", Fixtures.path("make_hostile_tarballs.py"), dir.url.path])
        return dir
    }

    @Test func eachRuleIsEnforced() throws {
        let dir = try Self.makeTarballs()
        defer { dir.remove() }
        for (file, ok, mentions) in Self.cases {
            let report = try TarballVerifier().verify(file: dir.appending(file).path)
            #expect(report.ok == ok, "\(file): \(report.errors)")
            let text = (report.errors + report.warnings).joined(separator: "\n")
            if !mentions.isEmpty { #expect(text.contains(mentions), "\(file): \(text)") }
        }
    }

    @Test func digestAndSizeLimitAreChecked() throws {
        let dir = try Self.makeTarballs()
        defer { dir.remove() }
        let good = dir.appending("good.tar.gz").path
        let actual = "sha256:" + sha256Hex(try Data(contentsOf: URL(fileURLWithPath: good)))
        #expect(try TarballVerifier(expectedDigest: actual).verify(file: good).ok)
        #expect(try TarballVerifier(expectedDigest: String(actual.dropFirst(7))).verify(file: good).ok,
                "a digest without algorithm is sha256, as Flux's fetcher assumes")
        let wrong = try TarballVerifier(expectedDigest: "sha256:" + String(repeating: "0", count: 64)).verify(file: good)
        #expect(!wrong.ok && wrong.errors.contains { $0.contains("digest mismatch") })

        let big = dir.appending("too-big.tar.gz").path
        #expect(try TarballVerifier().verify(file: big).ok)
        let limited = try TarballVerifier(maxUnpackedSize: 1024).verify(file: big)
        #expect(!limited.ok && limited.errors.contains { $0.contains("exceeds the limit") })
    }

    @Test func gitArchiveOutputFailsBecauseOfItsGlobalHeader() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("repo"))
        try repo.write("a.yaml", "a: 1\n")
        _ = try repo.commit("init")
        let archive = dir.appending("git.tar.gz")
        _ = try repo.git(["archive", "--format=tar.gz", "-o", archive.path, "HEAD"])
        let report = try TarballVerifier().verify(file: archive.path)
        #expect(!report.ok)
        #expect(report.errors.contains { $0.contains("pax_global_header") })
    }
}
