import Crypto
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import Provenance

/// A stored artifact's bytes as one response body, checked against its digest on the way
/// out: SHA-256 over exactly the bytes handed to the connection.
///
/// The file goes in 256 KiB chunks read on the thread pool; while one chunk is written, the
/// next is read and the previous one hashed (also on the pool), so a download holds three
/// chunks at most and hashing overlaps the socket. The last chunk is held back until the
/// digest of the whole file is known: if it does not match (the file changed at rest), the
/// body throws instead, which closes the connection one chunk short of `Content-Length`.
/// No client ever completes a wrong download; it sees a short read and retries.
///
/// Range requests are not served (a `Range` header gets the whole file, `200`), so every
/// download is hashed whole; there is no per-file "verified" cache to go stale.
struct VerifiedFileStream: Sendable {
    /// Where the mismatching file was, to act on exactly that file.
    struct FileIdentity: Sendable {
        var device: UInt64
        var inode: UInt64
    }

    let fd: Int32
    let size: UInt64
    let digest: String
    var chunkSize = 256 << 10

    /// The body; it owns (and closes) `fd`. `onMismatch` runs before the response is cut off.
    func body(onMismatch: @escaping @Sendable (_ actual: String, _ file: FileIdentity) async -> Void) -> ResponseBody {
        let stream = self
        return ResponseBody(contentLength: Int(size)) { writer in
            let hasher = ChunkHasher(fd: stream.fd)
            let loop = MultiThreadedEventLoopGroup.singleton.any()
            var reading: EventLoopFuture<ByteBuffer>?
            var hashing = loop.makeSucceededVoidFuture()
            do {
                var offset: UInt64 = 0
                if stream.size > 0 { reading = stream.read(at: 0, loop: loop) }
                while let pending = reading {
                    let chunk = try await pending.get()
                    reading = nil
                    offset += UInt64(chunk.readableBytes)
                    try await hashing.get()  // one chunk hashing at a time, in order
                    hashing = hasher.update(chunk, loop: loop)
                    if offset < stream.size {
                        reading = stream.read(at: offset, loop: loop)
                        try await writer.write(chunk)
                    } else {
                        try await hashing.get()
                        try await stream.verify(hasher.finish(), onMismatch: onMismatch)
                        try await writer.write(chunk)
                    }
                }
                if stream.size == 0 { try await stream.verify(hasher.finish(), onMismatch: onMismatch) }
                try await writer.finish(nil)
            } catch {
                // Nothing may touch the descriptor once it is closed (its number gets reused).
                _ = try? await reading?.get()
                _ = try? await hashing.get()
                close(stream.fd)
                throw error
            }
            close(stream.fd)
        }
    }

    private func read(at offset: UInt64, loop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        let length = Int(min(UInt64(chunkSize), size - offset))
        let fd = self.fd
        return NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { pointer in
                pread(fd, pointer.baseAddress, length, off_t(offset))
            }
            guard read == length else {
                throw FileStreamError.shortRead(expected: length, got: read, errno: read < 0 ? errno : 0)
            }
            return buffer
        }
    }

    private func verify(_ actual: (digest: String, file: FileIdentity), onMismatch: @Sendable (String, FileIdentity) async -> Void) async throws {
        guard actual.digest != digest else { return }
        await onMismatch(actual.digest, actual.file)
        throw FileStreamError.digestMismatch(expected: digest, actual: actual.digest)
    }
}

/// The running SHA-256 of one response's chunks. Confinement: `update` jobs run one after
/// another (each is awaited before the next starts), and `finish` only after the last.
private final class ChunkHasher: @unchecked Sendable {
    private var hasher = SHA256()
    private let fd: Int32

    init(fd: Int32) { self.fd = fd }

    func update(_ chunk: ByteBuffer, loop: any EventLoop) -> EventLoopFuture<Void> {
        NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
            chunk.withUnsafeReadableBytes { self.hasher.update(bufferPointer: $0) }
        }
    }

    func finish() -> (digest: String, file: VerifiedFileStream.FileIdentity) {
        var info = stat()
        _ = fstat(fd, &info)
        let digest = SHA256Digest(hasher.finalize()).description
        return (digest, .init(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)))
    }
}

enum FileStreamError: Error, CustomStringConvertible {
    case shortRead(expected: Int, got: Int, errno: Int32)
    case digestMismatch(expected: String, actual: String)

    var description: String {
        switch self {
        case .shortRead(let expected, let got, let code):
            "artifact file shorter than recorded (read \(got) of \(expected) bytes\(code != 0 ? ", errno \(code)" : ""))"
        case .digestMismatch(let expected, let actual):
            "artifact file hashes to \(actual), not \(expected): changed at rest; response cut short"
        }
    }
}
