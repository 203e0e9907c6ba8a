import Crypto
import Foundation
@testable import ArtifactMirror

/// A repository holding every case the packer must get right, with the exclusions the test
/// expects written out by hand (not computed by the code under test).
struct FixtureRepository {
    let repo: TestRepo
    let commit: String

    static let longUnsplittable = "long/" + String(repeating: "u", count: 120) + ".yaml"
    static let longSplittable = String(repeating: "p", count: 70) + "/" + String(repeating: "q", count: 50) + "/file.yaml"
    static let binaryContent = Data((0..<1024).map { UInt8($0 % 256) })

    /// Files that are in git but that Flux's default exclusions leave out.
    static let defaultExclusions: Set<String> = [
        ".gitignore", ".gitattributes", ".gitlab-ci.yml", ".github/workflows/ci.yml", "logo.png",
        "charts/app.tar.gz", "deep/a/.sops.yaml", "images/x.png/inner.yaml", "empty-after/only.png",
        "apps/.goreleaser.yml",
    ]
    /// Directories that are excluded themselves (their own entry disappears).
    static let excludedDirectories: Set<String> = [".github", ".github/workflows", "images/x.png"]
    /// Left out and reported.
    static let expectedSkipped: [SkippedPath] = [
        SkippedPath(path: "current", reason: .symlink),
        SkippedPath(path: "vendor/lib", reason: .submodule),
    ]

    /// Builds the repository at `url` and commits once on `main`.
    static func create(at url: URL) throws -> FixtureRepository {
        let repo = try TestRepo.create(at: url)
        let files: [(String, String, Bool)] = [
            ("README.md", "# fixture\n", false),
            ("apps/podinfo/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n", false),
            ("apps/podinfo/service.yaml", "apiVersion: v1\nkind: Service\n", false),
            ("apps/.goreleaser.yml", "builds: []\n", false),
            ("clusters/prod/kustomization.yaml", "resources:\n- ../../apps/podinfo\n", false),
            ("scripts/deploy.sh", "#!/bin/sh\necho deploy\n", true),
            (".gitignore", "*.tmp\n", false),
            (".gitattributes", "* text=auto\n", false),
            (".gitlab-ci.yml", "stages: [test]\n", false),
            (".github/workflows/ci.yml", "on: push\n", false),
            ("logo.png", "not really a png\n", false),
            ("charts/app.tar.gz", "not really a tarball\n", false),
            ("charts/values.yaml", "replicas: 2\n", false),
            ("deep/a/.sops.yaml", "creation_rules: []\n", false),
            ("deep/a/b/c/d/e.yaml", "depth: 5\n", false),
            ("images/x.png/inner.yaml", "inside a directory named like an image\n", false),
            ("empty-after/only.png", "png\n", false),
            ("sub/b.yaml", "b: 1\n", false),
            ("sub-x", "sorts after sub/ in Flux's walk, before it in git's tree order\n", false),
            ("configs/größe-café.yaml", "unicode: true\n", false),
            ("日本語/設定.yaml", "lang: ja\n", false),
            (longUnsplittable, "long: pax\n", false),
            (longSplittable, "long: prefix\n", false),
            ("empty.yaml", "", false),
        ]
        for (path, content, executable) in files { try repo.write(path, content, executable: executable) }
        try repo.write("data/blob.bin", binaryContent)
        try repo.symlink("current", target: "apps/podinfo")
        // A submodule entry (gitlink) without fetching anything.
        _ = try repo.git(["update-index", "--add", "--cacheinfo",
                          "160000,1111111111111111111111111111111111111111,vendor/lib"])
        let commit = try repo.commit("fixture")
        return FixtureRepository(repo: repo, commit: commit)
    }

    /// `git ls-tree -r` of the commit: path → (mode, blob id).
    func tree() throws -> [String: (mode: String, blob: String)] {
        let output = try repo.git(["ls-tree", "-r", "-z", "--full-tree", commit])
        var result: [String: (String, String)] = [:]
        for record in output.split(separator: "\0") where !record.isEmpty {
            let parts = record.split(separator: "\t", maxSplits: 1)
            let meta = parts[0].split(separator: " ")
            result[String(parts[1])] = (String(meta[0]), String(meta[2]))
        }
        return result
    }
}

/// Git's object id of a blob: SHA-1 of `blob <size>\0<content>`.
func gitBlobID(_ data: Data) -> String {
    var hasher = Insecure.SHA1()
    hasher.update(data: Data("blob \(data.count)\0".utf8))
    hasher.update(data: data)
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}

/// Checks one artifact with two independent readers against the commit it came from.
enum ArtifactAssertions {
    struct Failure: Error, CustomStringConvertible { var description: String }

    /// - Parameters:
    ///   - excluded: files of the commit that must be absent.
    ///   - excludedDirectories: directories whose own entry must be absent.
    static func check(artifact: URL, tree: [String: (mode: String, blob: String)], excluded: Set<String>,
                      excludedDirectories: Set<String>) throws -> [String] {
        var problems: [String] = []
        let expectedFiles = tree.filter { ($0.value.mode == "100644" || $0.value.mode == "100755") && !excluded.contains($0.key) }
        var expectedDirectories: Set<String> = ["."]
        for path in tree.keys {
            var components = path.split(separator: "/").dropLast()
            while !components.isEmpty {
                expectedDirectories.insert(components.joined(separator: "/"))
                components = components.dropLast()
            }
        }
        expectedDirectories.subtract(excludedDirectories)

        // Reader 1: Python's tarfile plus a raw block parser.
        let report = try TarballReport.read(artifact)
        if !report.problems.isEmpty { problems.append("tarfile reader problems: \(report.problems)") }
        if report.gzipHeaderHex != "1f8b08000000000000ff" { problems.append("gzip header \(report.gzipHeaderHex)") }
        if report.gzipMembers != 1 { problems.append("gzip members \(report.gzipMembers)") }
        if report.trailingZeroBlocks != 2 { problems.append("trailing zero blocks \(report.trailingZeroBlocks)") }
        if report.entries.first?.name != "." { problems.append("first entry is \(report.entries.first?.name ?? "none"), not '.'") }

        let files = report.entries.filter { $0.type == "file" }
        let directories = report.entries.filter { $0.type == "dir" }
        let others = report.entries.filter { $0.type != "file" && $0.type != "dir" }
        if !others.isEmpty { problems.append("non-file entries: \(others.map { "\($0.name) \($0.type)" })") }
        if Set(files.map(\.name)) != Set(expectedFiles.keys) {
            problems.append("file set differs: extra \(Set(files.map(\.name)).subtracting(expectedFiles.keys).sorted()), "
                + "missing \(Set(expectedFiles.keys).subtracting(files.map(\.name)).sorted())")
        }
        if Set(directories.map(\.name)) != expectedDirectories {
            problems.append("directory set differs: extra \(Set(directories.map(\.name)).subtracting(expectedDirectories).sorted()), "
                + "missing \(expectedDirectories.subtracting(directories.map(\.name)).sorted())")
        }
        for file in files {
            guard let expected = expectedFiles[file.name] else { continue }
            if file.gitBlobId != expected.blob { problems.append("content of \(file.name) differs (tarfile)") }
            let mode = expected.mode == "100755" ? 0o700 : 0o600
            if file.mode != mode { problems.append("\(file.name) mode \(String(file.mode, radix: 8))") }
        }
        for dir in directories where dir.mode != 0o750 { problems.append("dir \(dir.name) mode \(String(dir.mode, radix: 8))") }
        for entry in report.entries where entry.uid != 0 || entry.gid != 0 || !entry.uname.isEmpty || !entry.gname.isEmpty || entry.mtime != 0 {
            problems.append("\(entry.name): owner/time not normalized")
        }
        for header in report.rawHeaders {
            if !header.checksumOk { problems.append("bad checksum on \(header.nameField)") }
            if header.magic != "ustar\\0" || header.version != "00" { problems.append("\(header.nameField): magic \(header.magic)") }
            if header.uidField != "0000000\\0" || header.mtimeField != "00000000000\\0" {
                problems.append("\(header.nameField): raw uid/mtime fields \(header.uidField) \(header.mtimeField)")
            }
            if !["0", "5", "x"].contains(header.typeflag) { problems.append("typeflag \(header.typeflag)") }
        }
        // Walk order: depth-first, siblings byte-wise (compare component lists).
        let names = report.entries.dropFirst().map { $0.name.split(separator: "/").map { Array($0.utf8) } }
        for (a, b) in zip(names, names.dropFirst()) where !a.lexicographicallyPrecedes(b, by: { $0.lexicographicallyPrecedes($1) }) {
            problems.append("order: \(a.map { String(decoding: $0, as: UTF8.self) }) before \(b.map { String(decoding: $0, as: UTF8.self) })")
        }

        // Reader 2: GNU tar extracts the same content.
        let dir = try TemporaryDirectory(prefix: "gnu-tar")
        defer { dir.remove() }
        _ = try runProcess("/usr/bin/env", ["tar", "-xzf", artifact.path, "-C", dir.url.path])
        for (path, expected) in expectedFiles {
            let data = (try? Data(contentsOf: dir.url.appendingPathComponent(path))) ?? Data()
            if gitBlobID(data) != expected.blob { problems.append("GNU tar: content of \(path) differs") }
        }
        let listing = try runProcess("/usr/bin/env", ["tar", "-tzf", artifact.path]).stdout
            .split(separator: "\n").map { String($0.hasSuffix("/") ? $0.dropLast() : $0) }
        if Set(listing) != Set(files.map(\.name) + directories.map(\.name)) {
            problems.append("GNU tar lists \(listing.count) entries, tarfile \(files.count + directories.count)")
        }
        return problems
    }
}
