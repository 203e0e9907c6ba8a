import CZlib
import Crypto
import Foundation

/// The outcome of checking a tarball against Flux's unpack rules.
public struct VerificationReport: Sendable, Codable {
    public var path: String
    public var digest: String
    public var size: UInt64
    public var entries: Int
    public var files: Int
    public var directories: Int
    /// Sum of the header sizes, the figure Flux's untar limit is applied to.
    public var unpackedBytes: UInt64
    /// Things Flux tolerates but that are probably not what the producer meant.
    public var warnings: [String]
    /// Reasons Flux would reject the artifact (or unpack something else than intended).
    public var errors: [String]
    public var ok: Bool { errors.isEmpty }
}

/// Checks a `.tar.gz` the way Flux's fetcher and `tar.Untar` (fluxcd/pkg tar v1.2) treat it
/// (spec §3.2), streaming: gzip only (multi-member allowed); regular files and directories;
/// symlinks are dropped by Flux (warning); hard links, PAX global headers, devices and FIFOs
/// are errors; names must be relative, `/`-separated, without `\` or `..`; file modes must
/// be readable by the owner; optional size limit over the header sizes; the expected digest
/// over the exact file bytes.
public struct TarballVerifier: Sendable {
    /// Flux's `DefaultMaxUntarSize`; kustomize-controller passes no limit.
    public static let fluxDefaultMaxUntarSize: UInt64 = 100 << 20
    public var expectedDigest: String?
    public var maxUnpackedSize: UInt64?

    public init(expectedDigest: String? = nil, maxUnpackedSize: UInt64? = nil) {
        self.expectedDigest = expectedDigest
        self.maxUnpackedSize = maxUnpackedSize
    }

    public func verify(file path: String) throws(ArtifactMirrorError) -> VerificationReport {
        try inspect(file: path, capture: []).report
    }

    /// `verify`, also keeping the contents of the regular files named in `capture` and the
    /// list of entries (what a chart check needs beyond Flux's rules).
    func inspect(file path: String, capture: Set<String>) throws(ArtifactMirrorError) -> (report: VerificationReport, tar: TarStreamChecker) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw .invalidArgument("cannot open \(path): \(errnoText())")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: UInt64 = 0
        var parser = TarStreamChecker(maxUnpackedSize: maxUnpackedSize)
        parser.capture = capture
        let inflater = GzipInflater()
        var gzipError: String?
        while true {
            let chunk: Data
            do { chunk = try handle.read(upToCount: 1 << 20) ?? Data() } catch {
                throw .storage(path: path, detail: "read failed: \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            size += UInt64(chunk.count)
            hasher.update(data: chunk)
            if gzipError == nil {
                do { try inflater.feed(chunk) { parser.consume($0) } } catch { gzipError = error.message }
            }
        }
        if gzipError == nil, !inflater.atMemberBoundary {
            gzipError = size == 0 ? "the file is empty" : "the gzip stream is truncated"
        }
        let digest = "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
        var errors: [String] = []
        if let gzipError {
            errors.append(size > 0 && !inflater.sawHeader
                ? "not gzip-compressed: Flux requires a gzip body (\(gzipError))"
                : "gzip: \(gzipError)")
        } else {
            errors += parser.finish()
        }
        errors = parser.errors.filter { !errors.contains($0) } + errors
        if let expected = expectedDigest?.lowercased() {
            let normalized = expected.contains(":") ? expected : "sha256:" + expected
            if normalized != digest {
                errors.append("digest mismatch: expected \(normalized), file has \(digest)")
            }
        }
        return (VerificationReport(path: path, digest: digest, size: size, entries: parser.entries,
                                   files: parser.files, directories: parser.directories,
                                   unpackedBytes: parser.unpackedBytes, warnings: parser.warnings, errors: errors), parser)
    }
}

/// Streaming gzip decoder (multi-member), handing out decompressed bytes. A class so that
/// zlib's state is freed however the stream ends (a truncated or corrupt member leaves it
/// allocated until `deinit`).
final class GzipInflater {
    struct Failure: Error { var message: String }

    private var stream = z_stream()
    private var active = false
    private(set) var sawHeader = false
    /// True between members (at the start, and after each complete member).
    private(set) var atMemberBoundary = true
    private var output = [UInt8](repeating: 0, count: 256 * 1024)

    deinit {
        if active { inflateEnd(&stream) }
    }

    func feed(_ data: Data, _ sink: (UnsafeRawBufferPointer) -> Void) throws(Failure) {
        var failure: Failure?
        data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < input.count {
                if !active {
                    if relay_inflate_init_gzip(&stream) != Z_OK {
                        failure = Failure(message: "cannot initialise zlib"); return
                    }
                    active = true
                    atMemberBoundary = false
                }
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: UInt8.self) + offset)
                stream.avail_in = uInt(input.count - offset)
                var status: Int32 = Z_OK
                output.withUnsafeMutableBytes { out in
                    stream.next_out = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    stream.avail_out = uInt(out.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    let produced = out.count - Int(stream.avail_out)
                    if produced > 0 { sink(UnsafeRawBufferPointer(rebasing: out[0..<produced])) }
                }
                offset = input.count - Int(stream.avail_in)
                if status == Z_STREAM_END {
                    inflateEnd(&stream)
                    active = false
                    atMemberBoundary = true
                    sawHeader = true
                } else if status == Z_OK || status == Z_BUF_ERROR {
                    if stream.total_in >= 10 { sawHeader = true }
                } else {
                    let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                    failure = Failure(message: message)
                    return
                }
            }
        }
        if let failure { throw failure }
    }
}

/// Walks tar blocks as they stream in and applies Flux's rules to each header.
struct TarStreamChecker {
    let maxUnpackedSize: UInt64?
    private(set) var entries = 0
    private(set) var files = 0
    private(set) var directories = 0
    private(set) var unpackedBytes: UInt64 = 0
    private(set) var warnings: [String] = []
    private(set) var errors: [String] = []

    private var pending: [UInt8] = []
    private var dataRemaining: UInt64 = 0
    private var paddingRemaining = 0
    private var zeroBlocks = 0
    private var ended = false
    private var paxPath: String?
    private var paxSize: UInt64?
    private var gnuLongName: String?
    private var collecting: (kind: UInt8, remaining: Int, bytes: [UInt8])?
    /// Regular files whose contents are kept (up to 1 MiB each), e.g. a chart's Chart.yaml.
    var capture: Set<String> = []
    private(set) var captured: [String: [UInt8]] = [:]
    private var capturing: String?
    /// Every entry name, in order (for checks beyond Flux's, such as a chart's layout).
    private(set) var names: [(name: String, type: UInt8)] = []
    private var sizeLimitReported = false

    init(maxUnpackedSize: UInt64?) {
        self.maxUnpackedSize = maxUnpackedSize
    }

    mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        var index = 0
        while index < bytes.count {
            if errors.count >= 20 { return }
            if dataRemaining > 0 || paddingRemaining > 0 {
                let take: Int
                if dataRemaining > 0 {
                    take = Int(min(UInt64(bytes.count - index), dataRemaining))
                    if collecting != nil { collecting!.bytes += bytes[index..<(index + take)] }
                    dataRemaining -= UInt64(take)
                    if dataRemaining == 0 { finishCollecting() }
                } else {
                    take = min(bytes.count - index, paddingRemaining)
                    paddingRemaining -= take
                }
                index += take
                continue
            }
            let take = min(512 - pending.count, bytes.count - index)
            pending += bytes[index..<(index + take)]
            index += take
            if pending.count == 512 {
                header(pending)
                pending.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Errors that only the end of the stream reveals.
    mutating func finish() -> [String] {
        if errors.count >= 20 { return [] }
        if dataRemaining > 0 || !pending.isEmpty {
            return ["the tar stream is truncated inside an entry"]
        }
        if !ended {
            return ["the archive has no end-of-archive marker (two zero blocks): it is probably truncated"]
        }
        return []
    }

    private mutating func header(_ block: [UInt8]) {
        if ended { return }  // anything after the end marker is ignored by readers
        if block.allSatisfy({ $0 == 0 }) {
            zeroBlocks += 1
            if zeroBlocks == 2 { ended = true }
            return
        }
        if zeroBlocks == 1 { warnings.append("a single zero block in the middle of the archive") }
        zeroBlocks = 0

        guard checksumIsValid(block) else {
            errors.append("header \(entries + 1): bad checksum (not a tar archive, or corrupted)")
            ended = true
            return
        }
        let typeflag = block[156]
        let size = Self.octal(block[124..<136])
        guard var size else {
            errors.append("header \(entries + 1): unreadable size field")
            ended = true
            return
        }
        var name = Self.string(block[0..<100])
        let prefix = Self.string(block[345..<500])
        if block[257..<262].elementsEqual("ustar".utf8), !prefix.isEmpty { name = prefix + "/" + name }

        switch typeflag {
        case UInt8(ascii: "x"), UInt8(ascii: "L"):
            startCollecting(kind: typeflag, size: size)
            return
        case UInt8(ascii: "g"):
            errors.append("PAX global header '\(name)': Flux's untar would create it as an empty file; "
                + "produce the archive without one (git archive writes one)")
            skipData(size)
            return
        default:
            break
        }
        entries += 1
        if let long = gnuLongName { name = long }
        if let path = paxPath { name = path }
        if let override = paxSize { size = override }
        gnuLongName = nil
        paxPath = nil
        paxSize = nil
        let mode = Self.octal(block[100..<108]) ?? 0

        if let problem = Self.nameProblem(name) { errors.append("entry '\(name)': \(problem)") }
        if names.count < 100_000 { names.append((name, typeflag)) }
        if (typeflag == UInt8(ascii: "0") || typeflag == 0), capture.contains(name), captured[name] == nil, size <= 1 << 20 {
            capturing = name
            collecting = (UInt8(ascii: "0"), Int(size), [])
            skipData(size)
            if size == 0 { finishCollecting() }
            files += 1
            unpackedBytes += size
            return
        }
        switch typeflag {
        case UInt8(ascii: "0"), 0:
            files += 1
            if mode & 0o400 == 0 {
                errors.append("file '\(name)': mode \(String(mode, radix: 8)) lacks owner read; Flux would extract it unreadable")
            }
            unpackedBytes += size
        case UInt8(ascii: "5"):
            directories += 1
        case UInt8(ascii: "2"):
            warnings.append("symlink '\(name)': Flux drops symlinks silently")
        case UInt8(ascii: "1"):
            errors.append("hard link '\(name)': Flux's untar would create an empty file instead")
        case UInt8(ascii: "3"), UInt8(ascii: "4"), UInt8(ascii: "6"):
            errors.append("'\(name)' is a device or FIFO: Flux's untar fails with 'unsupported file type'")
        default:
            errors.append("'\(name)' has tar type '\(Character(UnicodeScalar(typeflag)))', which Flux does not unpack as a file or directory")
        }
        if let limit = maxUnpackedSize, unpackedBytes > limit, !sizeLimitReported {
            sizeLimitReported = true
            errors.append("unpacked size exceeds the limit of \(limit) bytes (sum of header sizes, as Flux counts it)")
        }
        skipData(typeflag == UInt8(ascii: "5") ? 0 : size)
    }

    private mutating func skipData(_ size: UInt64) {
        dataRemaining = size
        paddingRemaining = TarHeader.padding(for: size)
    }

    private mutating func startCollecting(kind: UInt8, size: UInt64) {
        guard size <= 1 << 20 else {
            errors.append("extended header of \(size) bytes is larger than Flux's reader accepts")
            ended = true
            return
        }
        collecting = (kind, Int(size), [])
        skipData(size)
        if size == 0 { finishCollecting() }
    }

    private mutating func finishCollecting() {
        guard let (kind, _, bytes) = collecting else { return }
        collecting = nil
        if kind == UInt8(ascii: "0"), let name = capturing {
            captured[name] = bytes
            capturing = nil
            return
        }
        if kind == UInt8(ascii: "L") {
            gnuLongName = Self.string(bytes[...])
            return
        }
        // PAX records: "<len> key=value\n", where <len> counts the whole record. As in Go's
        // archive/tar, a record must hold its own prefix and end in a newline.
        var rest = bytes[...]
        while !rest.isEmpty {
            guard let space = rest.firstIndex(of: UInt8(ascii: " ")),
                  let length = Int(String(decoding: rest[rest.startIndex..<space], as: UTF8.self)),
                  length > space - rest.startIndex + 1, length <= rest.count,
                  rest[rest.startIndex + length - 1] == UInt8(ascii: "\n") else {
                errors.append("malformed PAX extended header")
                return
            }
            let record = rest[(space + 1)..<(rest.startIndex + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
                let value = record[(equals + 1)...]
                if key == "path" { paxPath = String(decoding: value, as: UTF8.self) }
                if key == "size" { paxSize = UInt64(String(decoding: value, as: UTF8.self)) }
            }
            rest = rest[(rest.startIndex + length)...]
        }
    }

    private func checksumIsValid(_ block: [UInt8]) -> Bool {
        guard let recorded = Self.octal(block[148..<156]) else { return false }
        var sum: UInt64 = 0
        for (i, byte) in block.enumerated() { sum += (148..<156).contains(i) ? 32 : UInt64(byte) }
        return sum == recorded
    }

    /// Why Flux's `validRelPath` (or a later join) would reject or misplace this name.
    static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "empty name" }
        if name.contains("\\") { return "contains a backslash; Flux rejects the whole artifact" }
        if name.hasPrefix("/") { return "absolute path; Flux rejects the whole artifact" }
        if name.contains("../") { return "contains '../'; Flux rejects the whole artifact" }
        if name == ".." || name.hasSuffix("/..") { return "'..' would escape the target directory" }
        return nil
    }

    static func string(_ bytes: ArraySlice<UInt8>) -> String {
        let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
        return String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self)
    }

    /// Octal field (NUL/space terminated), or base-256 when the high bit is set.
    static func octal(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        if let first = bytes.first, first & 0x80 != 0 {
            return bytes.dropFirst().reduce(UInt64(first & 0x7f)) { $0 << 8 | UInt64($1) }
        }
        let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        if text.isEmpty { return 0 }
        return UInt64(text, radix: 8)
    }
}
