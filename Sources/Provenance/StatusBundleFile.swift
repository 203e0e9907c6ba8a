import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a status bundle file could not be read or written: each case says what to do.
public enum StatusBundleFileError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, detail: String)
    case tooLarge(path: String, bytes: UInt64, limit: UInt64)
    case malformed(path: String, detail: String)
    case cannotWrite(path: String, detail: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let detail): "cannot read the status bundle \(path): \(detail)"
        case .tooLarge(let path, let bytes, let limit):
            "\(path) holds \(bytes) bytes, more than a status bundle may (\(limit)): is it a relay bundle? `relay-server bundle import` takes the file `relay-agent export-status` wrote"
        case .malformed(let path, let detail):
            "\(path) is not a status bundle (\(detail)): give the file `relay-agent export-status` wrote, unchanged"
        case .cannotWrite(let path, let detail): "cannot write the status bundle \(path): \(detail)"
        }
    }

    /// Stable, for exit codes, logs and scripts.
    public var code: String {
        switch self {
        case .unreadable: "unreadable"
        case .tooLarge: "too_large"
        case .malformed: "malformed"
        case .cannotWrite: "unwritable"
        }
    }
}

/// A status bundle on disk: one `SignedEnvelope` as JSON (`SignedEnvelope.encoder`) whose
/// statement is a `StatusStatement`. Written atomically (a reader never sees half a file);
/// read with a size bound (the file comes from the other side of an air gap).
public enum StatusBundleFile {
    /// The agent's journal holds at most a few tens of MiB unacknowledged (`journalMaxBytes`);
    /// as base64 inside JSON that is a third more.
    public static let maxBytes: UInt64 = 256 << 20

    public static func read(path: String, maxBytes: UInt64 = maxBytes) throws(StatusBundleFileError) -> SignedEnvelope {
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: path) } catch {
            throw .unreadable(path: path, detail: error.localizedDescription)
        }
        let size = (attributes[.size] as? NSNumber)?.uint64Value ?? 0
        guard size <= maxBytes else { throw .tooLarge(path: path, bytes: size, limit: maxBytes) }
        let data: Data
        do {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            // Read one byte past the bound: a file growing meanwhile is still refused.
            data = try handle.read(upToCount: Int(maxBytes) + 1) ?? Data()
        } catch {
            throw .unreadable(path: path, detail: error.localizedDescription)
        }
        guard UInt64(data.count) <= maxBytes else { throw .tooLarge(path: path, bytes: UInt64(data.count), limit: maxBytes) }
        do { return try JSONDecoder().decode(SignedEnvelope.self, from: data) } catch {
            throw .malformed(path: path, detail: Self.describe(error))
        }
    }

    /// Writes `envelope` to `url` through a temporary file in the same directory, fsynced,
    /// then renamed over it.
    public static func write(_ envelope: SignedEnvelope, to url: URL) throws(StatusBundleFileError) {
        let path = url.path
        let data: Data
        do { data = try SignedEnvelope.encoder.encode(envelope) } catch {
            throw .cannotWrite(path: path, detail: "\(error)")
        }
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o644]) else {
            throw .cannotWrite(path: path, detail: "cannot create \(temporary.path) (does the directory exist and is it writable?)")
        }
        let fd = open(temporary.path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            let synced = fsync(fd) == 0
            close(fd)
            if !synced {
                unlink(temporary.path)
                throw .cannotWrite(path: path, detail: "fsync failed: \(String(cString: strerror(errno)))")
            }
        }
        guard rename(temporary.path, path) == 0 else {
            let detail = String(cString: strerror(errno))
            unlink(temporary.path)
            throw .cannotWrite(path: path, detail: detail)
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "no field \(key.stringValue)"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.dataCorrupted(let context):
            context.codingPath.isEmpty ? context.debugDescription
                : "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        default: "\(error)"
        }
    }
}
