import Foundation
import Testing
@testable import ArtifactMirror

#if canImport(Glibc)
import Glibc
#endif

/// Inputs the fuzz targets (Fuzz/, scripts/fuzz.sh) found, kept as regression tests. Each input
/// is inlined as base64; the comment names the target that found it.
@Suite struct FuzzFindingsTests {
    /// Writes `base64` to a file and verifies it.
    private func verify(base64: String, _ verifier: TarballVerifier = TarballVerifier()) throws -> VerificationReport {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let file = dir.appending("artifact.tar.gz")
        try #require(Data(base64Encoded: base64)).write(to: file)
        return try verifier.verify(file: file.path)
    }

    /// Target `tarball`: a PAX extended header whose record length ("2") is shorter than its own
    /// "length space" prefix crashed the verifier (a range with lowerBound > upperBound), so one
    /// hostile artifact took relay-agent down. Go's archive/tar rejects such a record.
    @Test func paxRecordShorterThanItsPrefixIsRejected() throws {
        let report = try verify(base64: "H4sIAAAAAAACAytIrGCgNTAAAjMTEzANBOg0EBgjsUHiZqZmhgwKtHcZEJQWlyQWAa1kGJnASCGRYRSMXJBGBzsI5390tpkhsEhQMBjN/6NgFIyCUUAzAABqQ7DGAAoAAA==")
        #expect(!report.ok)
        #expect(report.errors.contains { $0.contains("malformed PAX extended header") }, "\(report.errors)")
    }

    /// Target `tarball` (LeakSanitizer): a gzip stream that does not end cleanly (truncated or
    /// corrupt) left zlib's inflate state allocated: about 40 KB lost per rejected artifact.
    @Test func rejectedGzipStreamsDoNotLeak() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // Inflate has started (and allocated its window) when the data runs out.
        let truncated = try #require(Data(base64Encoded: Self.truncatedGzip))
        let file = dir.appending("truncated.tar.gz")
        try truncated.write(to: file)
        let verifier = TarballVerifier()
        #expect(try !verifier.verify(file: file.path).ok)
        // Resident memory across 500 rejections, three times; other tests allocate concurrently,
        // so the smallest growth counts. Leaking, each round grew by ~20 MB.
        var growth: [Int] = []
        for _ in 0..<3 {
            let before = try Self.residentBytes()
            for _ in 0..<500 { _ = try verifier.verify(file: file.path) }
            growth.append(try Self.residentBytes() - before)
        }
        #expect(growth.min()! < 4 << 20, "resident memory grew by \(growth) bytes per 500 rejected tarballs")
    }

    private static func residentBytes() throws -> Int {
        let statm = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        return try #require(Int(statm[1])) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// `gzip` of "kind: ConfigMap\n" × 4096, cut after 91 of its 182 bytes (inflating it yields
    /// 23 KB before the data runs out).
    static let truncatedGzip = "H4sIAAAAAAACA+3HsQ0AEAAAsN0V7rCaHSERIhL8PzlEu3XN3VLMZ/c5Sr1hubu7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7uw=="
}
