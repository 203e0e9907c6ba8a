import Foundation
import Testing
@testable import ArtifactMirror

/// Byte-level checks of the tar headers and the gzip stream, and read-back of a synthetic
/// archive by GNU tar and by Python's tarfile.
@Suite struct TarArchiveTests {
    private func field(_ block: [UInt8], _ range: Range<Int>) -> String {
        String(decoding: block[range], as: UTF8.self)
    }

    @Test func fileHeaderIsNormalizedLikeGo() {
        let block = TarHeader.encode(name: Array("a.yaml".utf8), kind: .file(size: 5, executable: false))
        #expect(block.count == 512)
        #expect(field(block, 0..<7) == "a.yaml\0")
        #expect(field(block, 100..<108) == "0000600\0")
        #expect(field(block, 108..<116) == "0000000\0")
        #expect(field(block, 116..<124) == "0000000\0")
        #expect(field(block, 124..<136) == "00000000005\0")
        #expect(field(block, 136..<148) == "00000000000\0")
        #expect(block[156] == UInt8(ascii: "0"))
        #expect(field(block, 257..<265) == "ustar\000")
        #expect(block[265..<329].allSatisfy { $0 == 0 }, "uname/gname must be empty")
        #expect(field(block, 329..<345) == "0000000\00000000\0")
        // Checksum: six octal digits, NUL, space; equal to the sum with the field as spaces.
        let checksum = field(block, 148..<156)
        #expect(checksum.hasSuffix("\0 "))
        var copy = block
        for i in 148..<156 { copy[i] = 32 }
        #expect(UInt64(checksum.prefix(6), radix: 8) == copy.reduce(0) { $0 + UInt64($1) })
    }

    @Test func modesFollowFlux() {
        let dir = TarHeader.encode(name: Array("sub".utf8), kind: .directory)
        #expect(field(dir, 100..<108) == "0000750\0")
        #expect(dir[156] == UInt8(ascii: "5"))
        #expect(field(dir, 0..<4) == "sub\0", "no trailing slash on directories")
        let exe = TarHeader.encode(name: Array("run.sh".utf8), kind: .file(size: 0, executable: true))
        #expect(field(exe, 100..<108) == "0000700\0")
    }

    @Test func longASCIINameIsSplitIntoPrefix() {
        let dir = String(repeating: "d", count: 80)
        let name = "\(dir)/\(String(repeating: "e", count: 60))/file.yaml"
        let header = TarHeader.encode(name: Array(name.utf8), kind: .file(size: 1, executable: false))
        #expect(header.count == 512, "USTAR, no PAX header")
        #expect(field(header, 345..<(345 + dir.count + 61)) == "\(dir)/\(String(repeating: "e", count: 60))")
        #expect(field(header, 0..<10) == "file.yaml\0")
    }

    @Test func unsplittableNameGetsPaxRecord() {
        let base = String(repeating: "n", count: 120)
        let name = "dir/\(base)"
        let header = TarHeader.encode(name: Array(name.utf8), kind: .file(size: 1, executable: false))
        #expect(header.count == 3 * 512, "x header, its data block, main header")
        #expect(header[156] == UInt8(ascii: "x"))
        #expect(field(header, 0..<100) == String("dir/PaxHeaders.0/\(base)".prefix(100)))
        let record = String(decoding: header[512..<1024].prefix { $0 != 0 }, as: UTF8.self)
        #expect(record == "\(record.split(separator: " ")[0]) path=\(name)\n")
        #expect(Int(record.split(separator: " ")[0]) == record.utf8.count)
        #expect(header[1024 + 156] == UInt8(ascii: "0"))
        #expect(field(header, (512 + 329)..<(512 + 345)) == String(repeating: "\0", count: 16),
                "Go leaves devmajor/devminor empty in x headers")
    }

    @Test func nonASCIINameGetsPaxRecordAndASCIIFallback() {
        let name = "configs/größe-café.yaml"
        let header = TarHeader.encode(name: Array(name.utf8), kind: .file(size: 1, executable: false))
        #expect(header.count == 3 * 512)
        #expect(field(header, 0..<34) == "configs/PaxHeaders.0/gre-caf.yaml\0")
        #expect(field(header, 1024..<(1024 + 21)) == "configs/gre-caf.yaml\0")
    }

    @Test(arguments: [0, 1, 1000, 256 * 1024, 256 * 1024 + 1, 3 * 256 * 1024 + 12345])
    func gzipOutputIsIdenticalForAnyThreadCountAndRoundTrips(size: Int) throws {
        var generator = SplitMix(seed: UInt64(size))
        let input = (0..<size).map { i -> UInt8 in i % 7 == 0 ? UInt8(generator.next() & 0xff) : UInt8(ascii: "a") + UInt8(i % 23) }
        var outputs: [[UInt8]] = []
        for threads in [1, 2, 4] {
            var out: [UInt8] = []
            let writer = try ParallelGzipWriter(threads: threads) { out += $0 }
            // Feed in uneven pieces to exercise block boundaries.
            var offset = 0, piece = 1
            while offset < input.count {
                let end = min(input.count, offset + piece)
                try writer.write(Array(input[offset..<end]))
                offset = end
                piece = piece * 3 + 1
            }
            try writer.finish()
            outputs.append(out)
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0] == outputs[2])
        #expect(Array(outputs[0].prefix(10)) == [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff])

        // Independent decoder: the gzip tool.
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let file = dir.appending("x.gz")
        try Data(outputs[0]).write(to: file)
        let unzipped = dir.appending("x")
        _ = try runProcess("/bin/sh", ["-c", "gzip -dc '\(file.path)' > '\(unzipped.path)'"])
        #expect(try Data(contentsOf: unzipped) == Data(input))
    }

    /// A synthetic archive with awkward names, read back by GNU tar and Python's tarfile.
    @Test func awkwardNamesSurviveBothReaders() throws {
        let names = [
            ".", "configs", "configs/" + String(repeating: "x", count: 110) + ".yaml",
            "configs/größe-café.yaml", String(repeating: "deep/", count: 30) + "leaf.yaml",
        ]
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let archive = dir.appending("a.tar.gz")
        var out: [UInt8] = []
        let writer = try ParallelGzipWriter(threads: 2) { out += $0 }
        var contents: [String: [UInt8]] = [:]
        var directories: Set<String> = [".", "configs"]
        var deep = ""
        for _ in 0..<30 {
            deep += deep.isEmpty ? "deep" : "/deep"
            directories.insert(deep)
        }
        for name in (directories.sorted() + names.filter { $0.hasSuffix(".yaml") }) {
            if directories.contains(name) {
                try writer.write(TarHeader.encode(name: Array(name.utf8), kind: .directory))
            } else {
                let data = Array("name: \(name)\n".utf8)
                contents[name] = data
                try writer.write(TarHeader.encode(name: Array(name.utf8), kind: .file(size: UInt64(data.count), executable: false)))
                try writer.write(data)
                try writer.write([UInt8](repeating: 0, count: TarHeader.padding(for: UInt64(data.count))))
            }
        }
        try writer.write(TarHeader.endOfArchive)
        try writer.finish()
        try Data(out).write(to: archive)

        // GNU tar extracts every file with identical bytes.
        let extract = try dir.subdirectory("gnu")
        _ = try runProcess("/usr/bin/env", ["tar", "-xzf", archive.path, "-C", extract.path])
        for (name, data) in contents {
            #expect(try Data(contentsOf: extract.appendingPathComponent(name)) == Data(data), "GNU tar: \(name)")
        }
        // Python's tarfile sees the same names and contents.
        let report = try TarballReport.read(archive)
        let files = report.entries.filter { $0.type == "file" }
        #expect(Set(files.map(\.name)) == Set(contents.keys))
        for file in files {
            #expect(file.sha256 == sha256Hex(contents[file.name] ?? []), "tarfile: \(file.name)")
        }
        #expect(report.trailingZeroBlocks == 2)
        #expect(report.problems.isEmpty, "\(report.problems)")
    }
}

/// A tiny deterministic generator for test data.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
