import Crypto
import Foundation

/// Test fixtures shipped beside the tests (read from the source tree).
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
}

func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

func sha256Hex(_ data: Data) -> String { sha256Hex([UInt8](data)) }

/// The report of `Fixtures/tarball_report.py`: an independent reader built on Python's
/// `tarfile` and its own block parser.
struct TarballReport: Decodable {
    struct Entry: Decodable {
        var name: String
        var type: String
        var mode: Int
        var uid: Int
        var gid: Int
        var uname: String
        var gname: String
        var mtime: Double
        var size: Int
        var ustarPrefixUsed: Bool
        var gitBlobId: String?
        var sha256: String?
        var paxHeaders: [String: String]
    }

    struct RawHeader: Decodable {
        var typeflag: String
        var nameField: String
        var modeField: String
        var uidField: String
        var gidField: String
        var mtimeField: String
        var chksumField: String
        var magic: String
        var version: String
        var unameField: String
        var gnameField: String
        var devmajorField: String
        var devminorField: String
        var checksumOk: Bool
    }

    var gzipHeaderHex: String
    var gzipMembers: Int
    var entries: [Entry]
    var rawHeaders: [RawHeader]
    var trailingZeroBlocks: Int
    var totalUncompressedSize: Int
    var problems: [String]

    static func read(_ archive: URL) throws -> TarballReport {
        let output = try runProcess("/usr/bin/env", ["python3", Fixtures.path("tarball_report.py"), archive.path])
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(TarballReport.self, from: Data(output.stdout.utf8))
    }
}
