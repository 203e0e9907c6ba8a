import Foundation
import Provenance
import Testing

@Suite struct LayoutTarTests {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Written in parts, read back across them, and readable by the system's tar once joined.
    @Test func splitArchiveReadsBackAndIsRealTar() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let big = directory.appendingPathComponent("big.bin")
        var bytes = [UInt8](repeating: 0, count: 3 << 20 + 17)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 2654435761 >> 7) }
        try Data(bytes).write(to: big)
        let entries = [TarEntry(name: "oci-layout", data: Data("{\"imageLayoutVersion\":\"1.0.0\"}".utf8)),
                       TarEntry(name: "blobs/sha256/big", size: UInt64(bytes.count), content: .file(path: big.path))]
        let total = TarFormat.archiveSize(entrySizes: entries.map(\.size))
        let partBytes: UInt64 = 1 << 20
        let parts = BundleParts(count: Int((total + partBytes - 1) / partBytes), partBytes: partBytes, totalBytes: total)
        let output = directory.appendingPathComponent("bundle.tar").path
        let writer = PartedTarWriter(output: output, parts: parts)
        try writer.write(entries)
        try writer.finish()
        #expect(writer.written == total)
        #expect(writer.paths.count == 4)
        for (index, path) in writer.paths.enumerated() {
            let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber).uint64Value
            #expect(size == (index < 3 ? partBytes : total - 3 * partBytes))
        }

        let reader = PartedTarReader(paths: writer.paths)
        let first = try #require(try reader.nextEntry())
        #expect(first.name == "oci-layout")
        _ = try reader.readData(size: first.size, limit: 1024)
        let second = try #require(try reader.nextEntry())
        #expect(second.name == "blobs/sha256/big" && second.size == UInt64(bytes.count))
        var read = Data()
        try reader.readContent(size: second.size) { read.append(contentsOf: $0) }
        #expect(read == Data(bytes))
        #expect(try reader.nextEntry() == nil)

        // Joined, the parts are one tar the system reads.
        let joined = directory.appendingPathComponent("joined.tar")
        FileManager.default.createFile(atPath: joined.path, contents: nil)
        let handle = try FileHandle(forWritingTo: joined)
        for path in writer.paths { try handle.write(contentsOf: try Data(contentsOf: URL(fileURLWithPath: path))) }
        try handle.close()
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tar.arguments = ["tar", "tf", joined.path]
        let pipe = Pipe()
        tar.standardOutput = pipe
        try tar.run()
        let listing = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        tar.waitUntilExit()
        #expect(tar.terminationStatus == 0)
        #expect(listing.split(separator: "\n") == ["oci-layout", "blobs/sha256/big"])
    }

    @Test func missingPartOrDamagedHeaderIsAnErrorNotACrash() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = Data(repeating: 7, count: 5000)
        let entries = [TarEntry(name: "a", data: data), TarEntry(name: "b", data: data)]
        let total = TarFormat.archiveSize(entrySizes: entries.map(\.size))
        let writer = PartedTarWriter(output: directory.appendingPathComponent("t").path,
                                     parts: BundleParts(count: Int((total + 4095) / 4096), partBytes: 4096, totalBytes: total))
        try writer.write(entries)
        try writer.finish()
        // Without the last part the stream ends early.
        let reader = PartedTarReader(paths: Array(writer.paths.dropLast()))
        #expect(throws: (any Error).self) {
            while let entry = try reader.nextEntry() { try reader.readContent(size: entry.size) { _ in } }
        }
        // A flipped header byte fails the checksum.
        var first = try Data(contentsOf: URL(fileURLWithPath: writer.paths[0]))
        first[3] ^= 0x40
        try first.write(to: URL(fileURLWithPath: writer.paths[0]))
        #expect(throws: BundleIOError.self) { _ = try PartedTarReader(paths: writer.paths).nextEntry() }
    }
}
