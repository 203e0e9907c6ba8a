import CZlib
import Dispatch

/// A gzip (RFC 1952) writer that compresses independent blocks on several cores and still
/// produces the same bytes whatever the number of threads.
///
/// The uncompressed stream is cut into blocks at fixed offsets. Each block is raw-deflated
/// on a worker with the previous block's last 32 KiB as preset dictionary, ending with a
/// sync flush (the last one with `Z_FINISH`), so the concatenation is one valid deflate
/// stream. The CRC-32 of each block is combined in order. Output is handed to `sink` in
/// order, and at most `maxInFlight` blocks are queued, so memory stays bounded.
///
/// zlib has no multi-threaded compressor; this is the pigz technique done with zlib's
/// public API. The gzip header is Go's: no name, no time, XFL 0, OS 255 (spec §1.4).
final class ParallelGzipWriter {
    typealias Sink = (UnsafeRawBufferPointer) throws -> Void

    static let header: [UInt8] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff]
    private static let dictionarySize = 32 * 1024

    private let blockSize: Int
    private let level: Int32
    private let maxInFlight: Int
    private let sink: Sink
    private let queue: DispatchQueue?

    private var current: [UInt8]
    private var previousTail: [UInt8] = []
    private var inFlight: [CompressionJob] = []
    private var crc: UInt = 0
    private var totalIn: UInt64 = 0
    private(set) var totalOut: UInt64 = 0
    private var finished = false

    /// - Parameters:
    ///   - threads: worker threads; 1 compresses inline on the caller's thread.
    ///   - blockSize: uncompressed bytes per independent block (fixed: it shapes the output).
    init(level: Int32 = 6, threads: Int, blockSize: Int = 1024 * 1024, sink: @escaping Sink) throws {
        precondition(blockSize > Self.dictionarySize)
        self.blockSize = blockSize
        self.level = level
        self.sink = sink
        self.maxInFlight = max(1, threads) * 2
        self.queue = threads > 1 ? DispatchQueue(label: "relay.gzip", attributes: .concurrent) : nil
        self.current = []
        self.current.reserveCapacity(blockSize)
        try emit(Self.header)
    }

    var uncompressedCount: UInt64 { totalIn }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let take = min(blockSize - current.count, bytes.count - offset)
            current.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)]))
            offset += take
            if current.count == blockSize { try submit(isLast: false) }
        }
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Flushes everything, writes the trailer and returns the compressed byte count.
    @discardableResult
    func finish() throws -> UInt64 {
        precondition(!finished, "finish() called twice")
        finished = true
        try submit(isLast: true)
        while !inFlight.isEmpty { try drainOldest() }
        var trailer = [UInt8](repeating: 0, count: 8)
        let crc32 = UInt32(truncatingIfNeeded: crc)
        let isize = UInt32(truncatingIfNeeded: totalIn)
        for i in 0..<4 {
            trailer[i] = UInt8(truncatingIfNeeded: crc32 >> (8 * i))
            trailer[4 + i] = UInt8(truncatingIfNeeded: isize >> (8 * i))
        }
        try emit(trailer)
        return totalOut
    }

    private func submit(isLast: Bool) throws {
        let job = CompressionJob(input: current, dictionary: previousTail, level: level, isLast: isLast)
        totalIn += UInt64(current.count)
        previousTail = current.count >= Self.dictionarySize
            ? Array(current[(current.count - Self.dictionarySize)...])
            : previousTail.suffix(Self.dictionarySize - current.count) + current
        current = []
        current.reserveCapacity(blockSize)
        if let queue {
            while inFlight.count >= maxInFlight { try drainOldest() }
            inFlight.append(job)
            queue.async { job.run() }
        } else {
            job.run()
            inFlight.append(job)
            try drainOldest()
        }
    }

    private func drainOldest() throws {
        let job = inFlight.removeFirst()
        job.done.wait()
        if let error = job.error { throw error }
        crc = crc32_combine(crc, job.crc, Int(job.inputCount))
        try emit(job.output)
    }

    private func emit(_ bytes: [UInt8]) throws {
        totalOut += UInt64(bytes.count)
        try bytes.withUnsafeBytes { try sink($0) }
    }
}

/// One block's compression. Owned by the writer; `run()` executes once on a worker, and the
/// writer reads the results only after `done` is signalled.
private final class CompressionJob: @unchecked Sendable {
    private let input: [UInt8]
    private let dictionary: [UInt8]
    private let level: Int32
    private let isLast: Bool
    let done = DispatchSemaphore(value: 0)
    private(set) var output: [UInt8] = []
    private(set) var crc: UInt = 0
    private(set) var error: ArtifactMirrorError?

    var inputCount: Int { input.count }

    init(input: [UInt8], dictionary: [UInt8], level: Int32, isLast: Bool) {
        self.input = input
        self.dictionary = dictionary
        self.level = level
        self.isLast = isLast
    }

    func run() {
        defer { done.signal() }
        var stream = z_stream()
        guard relay_deflate_init_raw(&stream, level) == Z_OK else {
            error = .git(operation: "zlib deflateInit2", message: "could not initialise deflate at level \(level)")
            return
        }
        defer { deflateEnd(&stream) }
        if !dictionary.isEmpty {
            dictionary.withUnsafeBufferPointer {
                _ = deflateSetDictionary(&stream, $0.baseAddress, uInt($0.count))
            }
        }
        let bound = Int(deflateBound(&stream, uLong(input.count))) + 64
        var out = [UInt8](repeating: 0, count: bound)
        var produced = 0
        var status: Int32 = Z_OK
        input.withUnsafeBufferPointer { inPtr in
            crc = crc32(0, inPtr.baseAddress, uInt(inPtr.count))
            stream.next_in = UnsafeMutablePointer(mutating: inPtr.baseAddress)
            stream.avail_in = uInt(inPtr.count)
            let flush = isLast ? Z_FINISH : Z_SYNC_FLUSH
            repeat {
                if produced == out.count { out += [UInt8](repeating: 0, count: 64 * 1024) }
                out.withUnsafeMutableBufferPointer { outPtr in
                    stream.next_out = outPtr.baseAddress! + produced
                    stream.avail_out = uInt(outPtr.count - produced)
                    status = deflate(&stream, flush)
                    produced = outPtr.count - Int(stream.avail_out)
                }
            } while status == Z_OK && (stream.avail_in > 0 || stream.avail_out == 0 || isLast)
        }
        let expected = isLast ? Z_STREAM_END : Z_OK
        guard status == expected || (status == Z_BUF_ERROR && !isLast) else {
            error = .git(operation: "zlib deflate", message: "deflate returned \(status)")
            return
        }
        out.removeSubrange(produced...)
        output = out
    }
}
