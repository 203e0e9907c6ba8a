import Foundation

// Bundles are OCI image layouts in a POSIX (ustar) tar, written and read here as streams: no
// listed library reads or writes tar, and a bundle must never be held in memory. Only what a
// layout needs: regular files with short names, mode 0644, owner 0, time 0.

/// Where a tar file entry's bytes come from.
public enum TarContent: Sendable {
    case bytes(Data)
    case file(path: String)
}

public struct TarEntry: Sendable {
    public var name: String
    public var size: UInt64
    public var content: TarContent
    public init(name: String, size: UInt64, content: TarContent) {
        self.name = name
        self.size = size
        self.content = content
    }
    public init(name: String, data: Data) { self.init(name: name, size: UInt64(data.count), content: .bytes(data)) }
}

public enum TarFormat {
    public static let block = 512

    /// Bytes a tar of entries with these sizes takes (headers, padding, end marker).
    public static func archiveSize(entrySizes: [UInt64]) -> UInt64 {
        entrySizes.reduce(UInt64(2 * block)) { $0 + UInt64(block) + padded($1) }
    }

    static func padded(_ size: UInt64) -> UInt64 { (size + UInt64(block) - 1) / UInt64(block) * UInt64(block) }

    static func header(name: String, size: UInt64) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: block)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: UInt64, at offset: Int, width: Int) {
            let digits = String(value, radix: 8)
            put(String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits, at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(0o644, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(0, at: 136, width: 12)
        header[156] = UInt8(ascii: "0")
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        for index in 148..<156 { header[index] = UInt8(ascii: " ") }
        let sum = header.reduce(0) { $0 + Int($1) }
        let digits = String(sum, radix: 8)
        put(String(repeating: "0", count: max(0, 6 - digits.count)) + digits, at: 148, width: 6)
        header[154] = 0
        header[155] = UInt8(ascii: " ")
        return header
    }
}

/// Why a bundle file could not be written or read; each names the file.
public enum BundleIOError: Error, CustomStringConvertible, Equatable {
    case io(path: String, detail: String)
    case malformed(String)
    case truncated(String)

    public var description: String {
        switch self {
        case .io(let path, let detail): "\(path): \(detail)"
        case .malformed(let detail): "not a valid bundle tar: \(detail)"
        case .truncated(let detail): "the bundle ends early: \(detail)"
        }
    }
}

/// Writes a tar to one file, or to numbered part files of at most `partBytes` each, under
/// temporary names renamed into place only once everything is written and synced.
public final class PartedTarWriter {
    public let paths: [String]
    private let partBytes: UInt64
    private var temporaries: [String] = []
    private var fd: Int32 = -1
    private var partIndex = -1
    private var writtenInPart: UInt64 = 0
    private var buffer = [UInt8]()
    public private(set) var written: UInt64 = 0
    /// Called with the bytes written so far, every few MiB (progress on long exports).
    public var progress: ((UInt64) -> Void)?
    private var lastProgress: UInt64 = 0

    /// Part file names for `output` and `count` parts: the file itself, or `output.001`, `.002`, ….
    public static func partPaths(output: String, count: Int) -> [String] {
        count <= 1 ? [output] : (1...count).map { output + "." + String(repeating: "0", count: max(0, 3 - String($0).count)) + String($0) }
    }

    public init(output: String, parts: BundleParts) {
        paths = Self.partPaths(output: output, count: parts.count)
        partBytes = parts.count <= 1 ? UInt64.max : parts.partBytes
        buffer.reserveCapacity(1 << 20)
    }

    deinit {
        if fd >= 0 { close(fd) }
        for path in temporaries { unlink(path) }
    }

    public func write(_ entries: [TarEntry]) throws(BundleIOError) {
        for entry in entries {
            try append(TarFormat.header(name: entry.name, size: entry.size))
            switch entry.content {
            case .bytes(let data):
                guard UInt64(data.count) == entry.size else { throw .malformed("\(entry.name): \(data.count) bytes, header says \(entry.size)") }
                try append(Array(data))
            case .file(let path):
                try copy(path: path, size: entry.size, name: entry.name)
            }
            let padding = Int(TarFormat.padded(entry.size) - entry.size)
            if padding > 0 { try append([UInt8](repeating: 0, count: padding)) }
        }
        try append([UInt8](repeating: 0, count: 2 * TarFormat.block))
        try flush()
    }

    /// Syncs and renames every part into place.
    public func finish() throws(BundleIOError) {
        try flush()
        try closePart()
        for (temporary, path) in zip(temporaries, paths) where rename(temporary, path) != 0 {
            throw .io(path: path, detail: String(cString: strerror(errno)))
        }
        temporaries = []
    }

    private func copy(path: String, size: UInt64, name: String) throws(BundleIOError) {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw .io(path: path, detail: String(cString: strerror(errno))) }
        defer { close(input) }
        var remaining = size
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while remaining > 0 {
            let count = chunk.withUnsafeMutableBytes { read(input, $0.baseAddress, Int(min(UInt64($0.count), remaining))) }
            guard count > 0 else { throw .io(path: path, detail: count == 0 ? "shorter than its recorded \(size) bytes" : String(cString: strerror(errno))) }
            try append(Array(chunk[0..<count]))
            remaining -= UInt64(count)
        }
    }

    private func append(_ bytes: [UInt8]) throws(BundleIOError) {
        var offset = 0
        while offset < bytes.count {
            if fd < 0 || writtenInPart + UInt64(buffer.count) == partBytes { try flush(); try nextPart() }
            let room = Int(min(UInt64(bytes.count - offset), partBytes - writtenInPart - UInt64(buffer.count)))
            buffer.append(contentsOf: bytes[offset..<(offset + room)])
            offset += room
            if buffer.count >= 1 << 20 { try flush() }
        }
    }

    private func flush() throws(BundleIOError) {
        guard fd >= 0, !buffer.isEmpty else { return }
        var offset = 0
        while offset < buffer.count {
            let count = buffer.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard count > 0 else { throw .io(path: paths[partIndex], detail: String(cString: strerror(errno))) }
            offset += count
        }
        writtenInPart += UInt64(buffer.count)
        written += UInt64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
        if written - lastProgress >= 16 << 20 {
            lastProgress = written
            progress?(written)
        }
    }

    private func nextPart() throws(BundleIOError) {
        try closePart()
        partIndex += 1
        guard partIndex < paths.count else { throw .malformed("more bytes than the \(paths.count) parts computed") }
        let temporary = paths[partIndex] + ".tmp-\(getpid())"
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path: temporary, detail: String(cString: strerror(errno))) }
        temporaries.append(temporary)
        writtenInPart = 0
    }

    private func closePart() throws(BundleIOError) {
        guard fd >= 0 else { return }
        defer { fd = -1 }
        if fsync(fd) != 0 || close(fd) != 0 { throw .io(path: paths[partIndex], detail: String(cString: strerror(errno))) }
    }
}

/// Reads a tar from one file or from part files read one after another, entry by entry,
/// never holding more than one chunk.
public final class PartedTarReader {
    private let paths: [String]
    private var fd: Int32 = -1
    private var partIndex = -1
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0
    /// Bytes consumed so far, over all parts.
    public private(set) var position: UInt64 = 0

    public init(paths: [String]) { self.paths = paths }
    deinit { if fd >= 0 { close(fd) } }

    /// The next entry's name and size, or nil at the end marker.
    public func nextEntry() throws(BundleIOError) -> (name: String, size: UInt64)? {
        let header = try read(exactly: TarFormat.block, what: "an entry header")
        if header.allSatisfy({ $0 == 0 }) { return nil }
        var sum = 0
        for (index, byte) in header.enumerated() { sum += (148..<156).contains(index) ? 32 : Int(byte) }
        guard let stored = Self.octal(header[148..<156]), stored == UInt64(sum) else { throw .malformed("an entry header's checksum is wrong at byte \(position - 512)") }
        let type = header[156]
        let nameBytes = header[0..<100].prefix { $0 != 0 }
        guard let name = String(bytes: nameBytes, encoding: .utf8), !name.isEmpty else { throw .malformed("an entry with no name at byte \(position - 512)") }
        guard type == UInt8(ascii: "0") || type == 0 else { throw .malformed("\(name) is not a regular file (type '\(Character(Unicode.Scalar(type)))')") }
        guard let size = Self.octal(header[124..<136]) else { throw .malformed("\(name) has an unreadable size") }
        return (name, size)
    }

    /// The current entry's bytes, `size` of them, in chunks, then its padding.
    public func readContent(size: UInt64, _ chunk: (UnsafeRawBufferPointer) throws -> Void) throws {
        var remaining = size
        while remaining > 0 {
            if start == end { try fill(what: "file content") }
            let count = Int(min(UInt64(end - start), remaining))
            try buffer.withUnsafeBytes { try chunk(UnsafeRawBufferPointer(rebasing: $0[start..<(start + count)])) }
            start += count
            position += UInt64(count)
            remaining -= UInt64(count)
        }
        let padding = Int(TarFormat.padded(size) - size)
        // Padding is zeros (as written): every byte of a bundle is accounted for.
        if padding > 0, try read(exactly: padding, what: "padding").contains(where: { $0 != 0 }) {
            throw BundleIOError.malformed("non-zero padding before byte \(position)")
        }
    }

    /// Reads what follows the end-of-archive block: it must be zeros (the second end block,
    /// as written) and nothing else. Returns the bytes read in all.
    public func readZeroTail() throws(BundleIOError) -> UInt64 {
        while true {
            if start == end {
                do { try fill(what: "the end of the archive") } catch .truncated { return position } catch { throw error }
            }
            guard !buffer[start..<end].contains(where: { $0 != 0 }) else { throw .malformed("data after the end of the archive, near byte \(position)") }
            position += UInt64(end - start)
            start = end
        }
    }

    /// The current entry's bytes, when small (statement, index): at most `limit`.
    public func readData(size: UInt64, limit: UInt64) throws -> Data {
        guard size <= limit else { throw BundleIOError.malformed("an entry of \(size) bytes where at most \(limit) are allowed") }
        var data = Data(capacity: Int(size))
        try readContent(size: size) { data.append(contentsOf: $0) }
        return data
    }

    private func read(exactly count: Int, what: String) throws(BundleIOError) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            if start == end { try fill(what: what) }
            let take = min(end - start, count - out.count)
            out.append(contentsOf: buffer[start..<(start + take)])
            start += take
            position += UInt64(take)
        }
        return out
    }

    private func fill(what: String) throws(BundleIOError) {
        while true {
            if fd >= 0 {
                let count = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    start = 0
                    end = count
                    return
                }
                if count < 0 { throw .io(path: paths[partIndex], detail: String(cString: strerror(errno))) }
                close(fd)
                fd = -1
            }
            partIndex += 1
            guard partIndex < paths.count else { throw .truncated("reading \(what) at byte \(position)") }
            fd = open(paths[partIndex], O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .io(path: paths[partIndex], detail: String(cString: strerror(errno))) }
        }
    }

    static func octal(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        for byte in bytes {
            if byte == 0 || byte == UInt8(ascii: " ") { if digits > 0 { break } else { continue } }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "7") else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 8)
            guard !overflow else { return nil }
            value = shifted + UInt64(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}
