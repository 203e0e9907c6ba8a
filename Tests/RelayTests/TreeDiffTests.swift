// TreeDiff against the real git: each case writes both trees to disk, runs
// `git diff --no-index` on them and expects TreeDiff's output byte for byte, `index` lines
// included (blob ids from Insecure.SHA1).

import Crypto
import Foundation
import Testing
@testable import ArtifactMirror

@Suite struct TreeDiffTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var old: [String: Data]
        var new: [String: Data]
        var oldLabel = "a"
        var newLabel = "b"
        var testDescription: String { name }
    }

    static let cases: [Case] = {
        func text(_ s: String) -> Data { Data(s.utf8) }
        var binary = [UInt8](repeating: 0x41, count: 64)
        binary[10] = 0
        var binary2 = binary
        binary2[20] = 0x42

        let code = """
        #include <stdio.h>

        int first(int a)
        {
            if (a > 0) {
                return a;
            }
            return -a;
        }

        int second(int b)
        {
            return b * 2;
        }

        """
        let changedCode = code
            .replacingOccurrences(of: "    return b * 2;\n", with: "    return b * 3;\n")
            .replacingOccurrences(of: "int second(int b)\n", with: "int inserted(void)\n{\n    return 0;\n}\n\nint second(int b)\n")

        let rows = (0 ..< 3000).map { "row \($0): \(($0 * 7919) % 1009)" }
        var editedRows = rows
        for i in stride(from: 2900, to: 0, by: -230) {
            switch i % 3 {
            case 0: editedRows[i] = "edited \(i)"
            case 1: editedRows.remove(at: i)
            default: editedRows.insert("inserted \(i)", at: i)
            }
        }
        let moved = (1 ... 10).map { "line \($0)" } + (21 ... 30).map { "line \($0)" }
            + (11 ... 20).map { "line \($0)" } + (31 ... 40).map { "line \($0)" }

        return [
            Case(name: "modified, added and deleted files in nested directories",
                 old: ["keep": text("k\n"), "gone/deep/file.txt": text("bye\nnow\n"), "src/a.c": text("int a;\n")],
                 new: ["keep": text("k\n"), "new/deeper/file.txt": text("hi\n"), "src/a.c": text("int a;\nint b;\n")]),
            Case(name: "missing trailing newlines",
                 old: ["a": text("one\ntwo"), "b": text("one\ntwo\n"), "c": text("p\nq\nr")],
                 new: ["a": text("one\ntwo\n"), "b": text("one\ntwo"), "c": text("p\nQ\nr")]),
            Case(name: "empty files",
                 old: ["gone": Data(), "toempty": text("content\n"), "fromempty": Data()],
                 new: ["added": Data(), "toempty": Data(), "fromempty": text("now\n")]),
            Case(name: "binary files",
                 old: ["b.bin": Data(binary), "gone.bin": Data(binary), "text-to-binary": text("text\n")],
                 new: ["b.bin": Data(binary2), "new.bin": Data(binary2), "text-to-binary": Data(binary)]),
            Case(name: "CRLF lines",
                 old: ["w.txt": text("one\r\ntwo\r\nthree\r\n")], new: ["w.txt": text("one\r\nTWO\r\nthree\r\nfour")]),
            Case(name: "function names, sliding and a moved block",
                 old: ["m.c": text(code), "moved.txt": text((1 ... 40).map { "line \($0)" }.joined(separator: "\n") + "\n")],
                 new: ["m.c": text(changedCode), "moved.txt": text(moved.joined(separator: "\n") + "\n")]),
            Case(name: "paths needing quotes, file replaced by directory and back",
                 old: ["sp ace": text("x y\n"), "q\"t\\b\tt": text("1\n"), "é.txt": text("q\n"), "t": text("f\n"),
                       "d/in": text("d\n"), "foo/x": text("1\n"), "foo-bar": text("1\n")],
                 new: ["sp ace": text("x z\n"), "q\"t\\b\tt": text("2\n"), "é.txt": text("r\n"), "t/in": text("g\n"),
                       "d": text("f\n"), "foo/x": text("2\n"), "foo-bar": text("2\n")]),
            Case(name: "other directory labels",
                 old: ["x/y": text("1\n"), "gone": text("g\n")], new: ["x/y": text("2\n"), "added": text("a\n")],
                 oldLabel: "old", newLabel: "new"),
            Case(name: "large file with scattered edits",
                 old: ["big.txt": text(rows.joined(separator: "\n") + "\n")],
                 new: ["big.txt": text(editedRows.joined(separator: "\n") + "\n")]),
        ]
    }()

    @Test("output equals git diff --no-index", arguments: cases)
    func matchesGit(_ c: Case) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("treediff-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try Self.write(c.old, under: root.appendingPathComponent(c.oldLabel))
        try Self.write(c.new, under: root.appendingPathComponent(c.newLabel))

        let git = try runProcess(
            findExecutable("git") ?? "/usr/bin/git",
            ["-c", "core.quotepath=off", "diff", "--no-index", "--no-color", "--no-renames", "--no-ext-diff", "-U3",
             c.oldLabel, c.newLabel],
            in: root,
            environment: testEnvironment(["GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"]),
            allowFailure: true)
        #expect(git.status == 1, "git reports differences: \(git.stderr)")

        let diff = TreeDiff.unified(old: c.old, new: c.new, oldLabel: c.oldLabel, newLabel: c.newLabel,
                                    blobID: Self.blobID)
        // Compared as bytes: String equality would accept differently normalised Unicode.
        #expect(Data(diff.utf8) == Data(git.stdout.utf8), "TreeDiff:\n\(diff)\ngit:\n\(git.stdout)")
    }

    @Test("equal trees give an empty diff")
    func equalTrees() {
        let tree = ["a/b.txt": Data("x\n".utf8), "c": Data()]
        #expect(TreeDiff.unified(old: tree, new: tree, blobID: Self.blobID).isEmpty)
    }

    /// git's blob id: SHA-1 of `blob <size>\0` and the contents.
    static func blobID(_ data: Data) -> String {
        var sha = Insecure.SHA1()
        sha.update(data: Data("blob \(data.count)\0".utf8))
        sha.update(data: data)
        return sha.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private static func write(_ tree: [String: Data], under root: URL) throws {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        for (path, data) in tree {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }
    }
}
