@testable import ArtifactMirror
import Crypto
import Foundation

/// `TarballVerifier` (what relay-agent and `artifact-mirror verify` run on artifacts).
///
/// Input: one mode byte, then the body. Even mode: the body is the file as received (gzip, or
/// anything). Odd mode: the body is a tar stream, which the harness wraps in valid gzip (one
/// member, or two split at a point the mode picks) so the fuzzer works on tar headers rather
/// than on deflate and CRC bytes.
///
/// Invariants: the report's size and digest are those of the file; expecting another digest
/// adds exactly one error; the tar checker reaches the same counts, warnings and errors
/// whatever the chunking of its input, and the report agrees with it; an accepted tarball is
/// still accepted when its own digest and unpacked size are required, and rejected with a
/// size limit one byte lower.
enum TarballTarget {
    static func run(_ input: Data) {
        guard let mode = input.first else { return }
        let body = Array(input.dropFirst())
        let file: [UInt8]
        if mode & 1 == 0 {
            file = body
        } else {
            let split = mode & 2 == 0 ? body.count : body.count * Int(mode >> 2) / 63
            file = Gzip.stored(body[..<split]) + (split < body.count ? Gzip.stored(body[split...]) : [])
        }
        let path = scratchFile("artifact.tar.gz")
        require(FileManager.default.createFile(atPath: path, contents: Data(file)), "cannot write a scratch file")
        let report = verify(path)
        require(report.size == UInt64(file.count), "size \(report.size) for \(file.count) bytes")
        let digest = "sha256:" + SHA256.hash(data: file).map { String(format: "%02x", $0) }.joined()
        require(report.digest == digest, "digest \(report.digest), expected \(digest)")
        require(report.files + report.directories <= report.entries, "more files and directories than entries")

        let other = verify(path, expectedDigest: "sha256:" + String(repeating: digest.hasSuffix("0") ? "1" : "0", count: 64))
        require(other.errors.count == report.errors.count + 1 && !other.ok, "a wrong digest was not reported once")

        if mode & 1 == 1 {
            checkChunking(body, against: report)
        }
        if report.ok {
            // Its own digest (bare and upper-case, as an operator may paste it) and its own size.
            let again = verify(path, expectedDigest: String(digest.dropFirst(7)).uppercased(), maxUnpackedSize: report.unpackedBytes)
            require(again.ok, "rejected with its own digest and unpacked size: \(again.errors)")
            if report.unpackedBytes > 0 {
                require(!verify(path, maxUnpackedSize: report.unpackedBytes - 1).ok, "accepted over the size limit")
            }
        }
    }

    private static func verify(_ path: String, expectedDigest: String? = nil, maxUnpackedSize: UInt64? = nil) -> VerificationReport {
        do {
            return try TarballVerifier(expectedDigest: expectedDigest, maxUnpackedSize: maxUnpackedSize).verify(file: path)
        } catch {
            fatalError("verify threw for a readable file: \(error)")
        }
    }

    /// The tar checker fed in one piece and in small uneven pieces must agree with itself and
    /// with the verifier's report.
    private static func checkChunking(_ tar: [UInt8], against report: VerificationReport) {
        var whole = TarStreamChecker(maxUnpackedSize: nil)
        tar.withUnsafeBytes { whole.consume($0) }
        let wholeEnd = whole.finish()
        var pieces = TarStreamChecker(maxUnpackedSize: nil)
        var offset = 0
        var step = 1
        while offset < tar.count {
            let end = min(tar.count, offset + step)
            tar[offset..<end].withUnsafeBytes { pieces.consume($0) }
            offset = end
            step = step % 700 + 37  // 1, 38, 75, ... crosses every block boundary differently
        }
        let piecesEnd = pieces.finish()
        require(whole.entries == pieces.entries && whole.files == pieces.files && whole.directories == pieces.directories
                && whole.unpackedBytes == pieces.unpackedBytes, "counts depend on chunking")
        require(whole.warnings == pieces.warnings, "warnings depend on chunking")
        require(whole.errors == pieces.errors && wholeEnd == piecesEnd,
                "errors depend on chunking: \(whole.errors + wholeEnd) vs \(pieces.errors + piecesEnd)")
        require(whole.entries == report.entries && whole.files == report.files && whole.directories == report.directories
                && whole.unpackedBytes == report.unpackedBytes && whole.warnings == report.warnings,
                "the verifier and the tar checker disagree")
        require(Set(whole.errors + wholeEnd) == Set(report.errors), "errors \(report.errors) vs \(whole.errors + wholeEnd)")
    }
}

/// gzip with stored (uncompressed) deflate blocks: valid framing around bytes the fuzzer chose.
enum Gzip {
    static func stored(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]
        var rest = bytes
        repeat {
            let block = rest.prefix(65_535)
            rest = rest.dropFirst(block.count)
            let length = UInt16(block.count)
            out.append(rest.isEmpty ? 1 : 0)
            out += [UInt8(length & 0xff), UInt8(length >> 8), UInt8(~length & 0xff), UInt8(~length >> 8)]
            out += block
        } while !rest.isEmpty
        out += littleEndian(crc32(bytes)) + littleEndian(UInt32(truncatingIfNeeded: bytes.count))
        return out
    }

    private static func littleEndian(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    private static let table: [UInt32] = (0..<256).map { index in
        var c = UInt32(index)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
