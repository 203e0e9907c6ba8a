/// Encodes tar headers exactly as Go's `archive/tar` writes them for Flux's
/// `Storage.Archive` (spec §1.3): USTAR when the entry fits (splitting long ASCII names into
/// prefix + name), otherwise a PAX `x` header named `<dir>/PaxHeaders.0/<base>` followed by
/// the USTAR header. Owners, times and devices are zero; modes are 0750/0700/0600.
///
/// Hand-written because no Swift package in reach writes tar; the format is tiny and the
/// exact byte layout matters for reproducibility.
enum TarHeader {
    static let blockSize = 512
    /// Two zero blocks, with no padding to a 10240-byte record (as Go writes it).
    static let endOfArchive = [UInt8](repeating: 0, count: 2 * blockSize)

    enum Kind: Equatable {
        case directory
        case file(size: UInt64, executable: Bool)
    }

    /// Header bytes (a multiple of 512) for one entry. `name` is the UTF-8 relative path
    /// (`.` for the root, no trailing slash for directories).
    static func encode(name: [UInt8], kind: Kind) -> [UInt8] {
        let mode: UInt64
        let size: UInt64
        let typeflag: UInt8
        switch kind {
        case .directory:
            (mode, size, typeflag) = (0o750, 0, UInt8(ascii: "5"))
        case .file(let fileSize, let executable):
            (mode, size, typeflag) = (executable ? 0o700 : 0o600, fileSize, UInt8(ascii: "0"))
        }

        var paxRecords: [(String, [UInt8])] = []
        let sizeFitsOctal = size < (1 << 33)  // 11 octal digits
        if !sizeFitsOctal { paxRecords.append(("size", Array(String(size).utf8))) }

        let ascii = name.allSatisfy { $0 < 0x80 }
        var ustarName = name
        var ustarPrefix: [UInt8] = []
        if name.count > 100 || !ascii {
            if let (prefix, suffix) = splitUSTARPath(name) {
                ustarPrefix = prefix
                ustarName = suffix
            } else {
                paxRecords.append(("path", name))
            }
        }

        if paxRecords.isEmpty {
            var block = headerBlock(name: ustarName, mode: mode, size: size, typeflag: typeflag)
            put(ustarPrefix, into: &block, at: 345, width: 155)
            finishChecksum(&block)
            return block
        }

        // PAX: records sorted by key, then an `x` header, then the main header whose
        // fields carry best-effort (ASCII-only, truncated) values.
        paxRecords.sort { $0.0 < $1.0 }
        var data: [UInt8] = []
        for (key, value) in paxRecords { data += paxRecord(key: key, value: value) }
        var result = rawFileHeader(name: paxHeaderName(for: name), size: UInt64(data.count), typeflag: UInt8(ascii: "x"))
        result += data
        result += [UInt8](repeating: 0, count: padding(for: UInt64(data.count)))
        var block = headerBlock(
            name: toASCII(name), mode: mode, size: sizeFitsOctal ? size : 0, typeflag: typeflag)
        finishChecksum(&block)
        result += block
        return result
    }

    /// Zero bytes after `size` bytes of file data, up to the next 512-byte boundary.
    static func padding(for size: UInt64) -> Int {
        let rest = Int(size % UInt64(blockSize))
        return rest == 0 ? 0 : blockSize - rest
    }

    // MARK: - Field layout

    private static func headerBlock(name: [UInt8], mode: UInt64, size: UInt64, typeflag: UInt8) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: blockSize)
        put(name, into: &block, at: 0, width: 100)
        putOctal(mode, into: &block, at: 100, width: 8)
        putOctal(0, into: &block, at: 108, width: 8)  // uid
        putOctal(0, into: &block, at: 116, width: 8)  // gid
        putOctal(size, into: &block, at: 124, width: 12)
        putOctal(0, into: &block, at: 136, width: 12)  // mtime: Unix 0
        block[156] = typeflag
        putMagic(&block)
        // uname/gname stay empty.
        putOctal(0, into: &block, at: 329, width: 8)  // devmajor
        putOctal(0, into: &block, at: 337, width: 8)  // devminor
        return block
    }

    /// The `x` header itself, as Go's `writeRawFile` makes it: no devmajor/devminor.
    private static func rawFileHeader(name: [UInt8], size: UInt64, typeflag: UInt8) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: blockSize)
        put(name, into: &block, at: 0, width: 100)
        putOctal(0, into: &block, at: 100, width: 8)
        putOctal(0, into: &block, at: 108, width: 8)
        putOctal(0, into: &block, at: 116, width: 8)
        putOctal(size, into: &block, at: 124, width: 12)
        putOctal(0, into: &block, at: 136, width: 12)
        block[156] = typeflag
        putMagic(&block)
        finishChecksum(&block)
        return block
    }

    private static func putMagic(_ block: inout [UInt8]) {
        put(Array("ustar".utf8), into: &block, at: 257, width: 6)  // "ustar\0"
        block[263] = UInt8(ascii: "0")
        block[264] = UInt8(ascii: "0")
    }

    /// Copies `bytes` into the field, truncating; a shorter value is NUL-terminated.
    private static func put(_ bytes: [UInt8], into block: inout [UInt8], at offset: Int, width: Int) {
        let count = min(bytes.count, width)
        for i in 0..<count { block[offset + i] = bytes[i] }
        if count < width { block[offset + count] = 0 }
    }

    /// Zero-padded octal in `width - 1` digits plus a NUL.
    private static func putOctal(_ value: UInt64, into block: inout [UInt8], at offset: Int, width: Int) {
        var digits = Array(String(value, radix: 8).utf8)
        if digits.count < width - 1 {
            digits = [UInt8](repeating: UInt8(ascii: "0"), count: width - 1 - digits.count) + digits
        }
        put(digits, into: &block, at: offset, width: width)
    }

    /// Checksum of the block with the checksum field read as spaces, written as six octal
    /// digits, a NUL and a space.
    private static func finishChecksum(_ block: inout [UInt8]) {
        for i in 148..<156 { block[i] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + UInt64($1) }
        putOctal(sum, into: &block, at: 148, width: 7)
        block[155] = UInt8(ascii: " ")
    }

    // MARK: - Names

    /// Go's `splitUSTARPath`: split at a `/` so the suffix fits 100 bytes and the prefix 155.
    static func splitUSTARPath(_ name: [UInt8]) -> ([UInt8], [UInt8])? {
        var length = name.count
        guard length > 100, name.allSatisfy({ $0 < 0x80 }) else { return nil }
        if length > 156 {
            length = 156
        } else if name[length - 1] == UInt8(ascii: "/") {
            length -= 1
        }
        guard let slash = name[..<length].lastIndex(of: UInt8(ascii: "/")) else { return nil }
        let suffixLength = name.count - slash - 1
        guard slash > 0, suffixLength <= 100, suffixLength > 0, slash <= 155 else { return nil }
        return (Array(name[..<slash]), Array(name[(slash + 1)...]))
    }

    /// `path.Join(dir, "PaxHeaders.0", base)`, ASCII-only, truncated to 100 bytes, without a
    /// trailing slash.
    static func paxHeaderName(for name: [UInt8]) -> [UInt8] {
        let slash = UInt8(ascii: "/")
        let base: ArraySlice<UInt8>
        var joined: [UInt8] = []
        if let last = name.lastIndex(of: slash) {
            joined += name[..<last]
            joined.append(slash)
            base = name[(last + 1)...]
        } else {
            base = name[...]
        }
        joined += Array("PaxHeaders.0".utf8)
        if !base.isEmpty {
            joined.append(slash)
            joined += base
        }
        var ascii = toASCII(joined)
        if ascii.count > 100 { ascii = Array(ascii[..<100]) }
        while ascii.last == slash { ascii.removeLast() }
        return ascii
    }

    /// Keeps the ASCII scalars of a UTF-8 name (Go's `toASCII`).
    static func toASCII(_ name: [UInt8]) -> [UInt8] {
        if name.allSatisfy({ $0 < 0x80 }) { return name }
        return String(decoding: name, as: UTF8.self).unicodeScalars
            .filter { $0.value < 0x80 && $0.value != 0 }
            .map { UInt8($0.value) }
    }

    /// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
    static func paxRecord(key: String, value: [UInt8]) -> [UInt8] {
        let body = Array(" \(key)=".utf8) + value + [UInt8(ascii: "\n")]
        var length = body.count + 1
        while String(length).utf8.count + body.count != length {
            length = String(length).utf8.count + body.count
        }
        return Array(String(length).utf8) + body
    }
}
