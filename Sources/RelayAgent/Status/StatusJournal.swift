import Crypto
import Foundation
import Synchronization
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// The agent's durable, sequence-numbered record of Flux status changes, kept until the
/// relay acknowledges it.
///
/// Layout under `directory`:
/// ```
/// journal.json              {"journalID": "...", "acknowledged": N}
/// seg-<first sequence>.log  records: 4-byte length, StatusEntry (protobuf), 4-byte checksum
/// ```
/// `append` returns only after the records are fsynced; concurrent appends share one fsync
/// (group commit), and readers see an entry only once it is durable, so a sequence number
/// that was sent can never be handed out again after a crash. A record torn by a crash (short or
/// failing its checksum) ends its segment: the file is cut back to the last good record.
/// Segments whose entries are all acknowledged are deleted. When the unacknowledged bytes
/// would pass `maxBytes`, the oldest segments are dropped and a `Gap` entry says which
/// sequences were lost, so a reader can never mistake a loss for a quiet period.
public final class StatusJournal: Sendable {
    public struct Summary: Sendable, Equatable {
        public var journalID: String
        public var acknowledged: UInt64
        public var nextSequence: UInt64
        /// Entries not yet acknowledged.
        public var backlog: Int
        public var backlogBytes: Int
        public var gaps: Int
    }

    private struct Segment {
        var first: UInt64
        var url: URL
        var bytes: Int
        var entries: [Relay_V1_StatusEntry]
    }

    private struct State {
        var journalID: String
        var acknowledged: UInt64
        var nextSequence: UInt64
        var segments: [Segment]
        /// Entries up to here are on disk (fsynced) and visible to readers.
        var durable: UInt64
        /// Entries up to here are written (not necessarily synced).
        var written: UInt64
        /// The open file of the last segment.
        var fd: Int32 = -1
        var fdSegment: URL?
        var gaps = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var unackedBytes = 0
    }

    public let directory: URL
    public let maxBytes: Int
    let segmentBytes: Int
    private let state: Mutex<State>
    /// One fsync at a time; whoever holds it syncs everything written so far.
    private let syncing = Mutex<Void>(())
    /// Holds the journal's exclusive lock for this object's lifetime.
    private let lockFD: Int32

    deinit {
        state.withLock { if $0.fd >= 0 { close($0.fd) } }
        close(lockFD)
    }

    /// The journal's id (cheap).
    public var journalID: String { state.withLock { $0.journalID } }
    /// The highest sequence the relay acknowledged (cheap).
    public var acknowledgedSequence: UInt64 { state.withLock { $0.acknowledged } }

    public init(directory: URL, maxBytes: Int = 32 << 20, segmentBytes: Int = 1 << 20) throws {
        self.directory = directory
        self.maxBytes = max(maxBytes, 64 << 10)
        self.segmentBytes = min(segmentBytes, self.maxBytes / 4)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // One writer per journal: a second relay-agent on the same dataDir would interleave
        // sequence numbers.
        lockFD = open(directory.appendingPathComponent(".lock").path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            if lockFD >= 0 { close(lockFD) }
            throw JournalError.inUse(directory.path)
        }
        // Holding the lock, no one else writes here: a `.tmp` file is a killed writer's leftover.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasSuffix(".tmp") {
            unlink(directory.appendingPathComponent(name).path)
        }
        let meta = Self.readMeta(directory)
        var segments: [Segment] = []
        var last: UInt64 = meta.acknowledged
        let names = (try FileManager.default.contentsOfDirectory(atPath: directory.path)).filter { $0.hasPrefix("seg-") && $0.hasSuffix(".log") }
        for name in names.sorted() {
            let url = directory.appendingPathComponent(name)
            var segment = try Self.load(url)
            // Drop what was acknowledged before a crash could delete the file.
            segment.entries.removeAll { $0.sequence <= meta.acknowledged }
            if segment.entries.isEmpty {
                try? FileManager.default.removeItem(at: url)
                continue
            }
            last = max(last, segment.entries.last!.sequence)
            segments.append(segment)
        }
        var initial = State(journalID: meta.journalID, acknowledged: meta.acknowledged, nextSequence: last + 1, segments: segments,
                            durable: last, written: last)
        initial.unackedBytes = segments.reduce(0) { $0 + $1.bytes }
        state = Mutex(initial)
        // Only a new journal writes at open: readers such as `relay-agent list` open it too.
        if !FileManager.default.fileExists(atPath: directory.appendingPathComponent("journal.json").path) {
            try Self.writeMeta(directory, journalID: meta.journalID, acknowledged: meta.acknowledged)
        }
    }

    public var summary: Summary {
        state.withLock {
            Summary(journalID: $0.journalID, acknowledged: $0.acknowledged, nextSequence: $0.nextSequence,
                    backlog: $0.segments.reduce(0) { $0 + $1.entries.count }, backlogBytes: $0.unackedBytes, gaps: $0.gaps)
        }
    }

    /// Appends entries durably, each cut to `StatusEntryLimits`; returns their sequence numbers.
    @discardableResult
    public func append(_ kinds: [Relay_V1_StatusEntry.OneOf_Kind], observed: Date = Date()) throws -> [UInt64] {
        guard !kinds.isEmpty else { return [] }
        let (sequences, last) = try state.withLock { state -> ([UInt64], UInt64) in
            var assigned: [UInt64] = []
            var pending: [Relay_V1_StatusEntry] = []
            for kind in kinds {
                pending.append(StatusEntryLimits.clamped(.with {
                    $0.sequence = state.nextSequence
                    $0.observedUnixMs = Int64(observed.timeIntervalSince1970 * 1000)
                    $0.kind = kind
                }))
                assigned.append(state.nextSequence)
                state.nextSequence += 1
            }
            let encoded = try pending.map { try Self.encode($0) }
            let incoming = encoded.reduce(0) { $0 + $1.count }
            // Over budget: drop whole oldest segments and say which sequences went. A gap
            // marker dropped with its segment hands its range on, so every lost sequence stays
            // named exactly once.
            var lost: [ClosedRange<UInt64>] = []
            while state.unackedBytes + incoming > maxBytes, let oldest = state.segments.first {
                state.segments.removeFirst()
                state.unackedBytes -= oldest.bytes
                if oldest.url == state.fdSegment { closeSegment(&state) }
                try? FileManager.default.removeItem(at: oldest.url)
                for entry in oldest.entries {
                    if case .gap(let gap)? = entry.kind { lost.append(gap.first...gap.last) }
                    lost.append(entry.sequence...entry.sequence)
                }
            }
            var records = zip(pending, encoded).map { ($0, $1) }
            for range in Self.merged(lost) {
                state.gaps += 1
                // Gap markers follow the entries being appended (sequences stay in order).
                let gap = Relay_V1_StatusEntry.with {
                    $0.sequence = state.nextSequence
                    $0.observedUnixMs = Int64(observed.timeIntervalSince1970 * 1000)
                    $0.gap = .with {
                        $0.first = range.lowerBound
                        $0.last = range.upperBound
                        $0.reason = "status journal full (\(maxBytes) bytes unacknowledged): the relay was unreachable too long"
                    }
                }
                state.nextSequence += 1
                records.append((gap, try Self.encode(gap)))
            }
            try write(records, state: &state)
            state.written = records.last!.0.sequence
            return (assigned, state.written)
        }
        try sync(upTo: last)
        return sequences
    }

    /// Makes everything up to `sequence` durable: one fsync covers every append written
    /// before it started, so concurrent appenders share it.
    private func sync(upTo sequence: UInt64) throws {
        try syncing.withLock { _ in
            let (fd, target, done) = state.withLock { state in (state.fd, state.written, state.durable >= sequence) }
            if done { return }
            if fd >= 0, fsync(fd) != 0 {
                throw JournalError.io("cannot fsync the status journal: \(String(cString: strerror(errno)))")
            }
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.durable = max(state.durable, target)
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Durable, unacknowledged entries with a sequence above `after`, oldest first: at most
    /// `limit`, and no more once they add up to `maxBytes` (at least one), so a batch of them
    /// always fits in one tunnel message.
    public func entries(after: UInt64, limit: Int, maxBytes: Int = StatusEntryLimits.batchBytes) -> [Relay_V1_StatusEntry] {
        state.withLock { state in
            var result: [Relay_V1_StatusEntry] = []
            var bytes = 0
            for segment in state.segments {
                guard let last = segment.entries.last, last.sequence > after else { continue }
                // Entries are sorted: find the first one after `after`.
                var low = 0, high = segment.entries.count
                while low < high {
                    let middle = (low + high) / 2
                    if segment.entries[middle].sequence <= after { low = middle + 1 } else { high = middle }
                }
                for entry in segment.entries[low...] {
                    guard entry.sequence <= state.durable else { return result }
                    bytes += ((try? entry.serializedBytes() as [UInt8])?.count ?? 0)
                    if !result.isEmpty && bytes > maxBytes { return result }
                    result.append(entry)
                    if result.count >= limit { return result }
                }
            }
            return result
        }
    }

    /// The relay holds everything up to `sequence`: forget it.
    public func acknowledge(upTo sequence: UInt64) throws {
        try state.withLock { state in
            guard sequence > state.acknowledged else { return }
            state.acknowledged = min(sequence, state.nextSequence - 1)
            try Self.writeMeta(directory, journalID: state.journalID, acknowledged: state.acknowledged)
            var kept: [Segment] = []
            for var segment in state.segments {
                if segment.entries.last!.sequence <= state.acknowledged {
                    if segment.url == state.fdSegment { closeSegment(&state) }
                    try? FileManager.default.removeItem(at: segment.url)
                } else {
                    let before = segment.entries.count
                    segment.entries.removeAll { $0.sequence <= state.acknowledged }
                    if segment.entries.count != before {
                        segment.bytes = try segment.entries.reduce(0) { $0 + (try Self.encode($1)).count }
                    }
                    kept.append(segment)
                }
            }
            state.segments = kept
            state.unackedBytes = kept.reduce(0) { $0 + $1.bytes }
        }
    }

    /// Waits until an entry is appended after `sequence` (returns at once if one exists).
    /// Cancellation ends the wait.
    public func waitForEntries(after sequence: UInt64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.durable > sequence || Task.isCancelled { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            wakeAll()
        }
    }

    /// Wakes every waiter (used when a session ends).
    public func wakeAll() {
        let waiters = state.withLock { state in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: - Files

    private func write(_ records: [(Relay_V1_StatusEntry, Data)], state: inout State) throws {
        var index = 0
        while index < records.count {
            if state.segments.isEmpty || state.segments[state.segments.count - 1].bytes >= segmentBytes {
                let first = records[index].0.sequence
                let url = directory.appendingPathComponent(String(format: "seg-%020llu.log", first))
                state.segments.append(Segment(first: first, url: url, bytes: 0, entries: []))
            }
            var segment = state.segments.removeLast()
            var chunk = Data()
            while index < records.count, segment.bytes + chunk.count < segmentBytes || chunk.isEmpty {
                chunk.append(records[index].1)
                segment.entries.append(records[index].0)
                index += 1
            }
            if state.fdSegment != segment.url {
                // Rolling over: the finished segment is made durable before it is let go.
                if state.fd >= 0, fsync(state.fd) != 0 {
                    throw JournalError.io("cannot fsync the status journal: \(String(cString: strerror(errno)))")
                }
                closeSegment(&state)
                state.fd = open(segment.url.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
                guard state.fd >= 0 else { throw JournalError.io("cannot open \(segment.url.path): \(String(cString: strerror(errno)))") }
                state.fdSegment = segment.url
            }
            try Self.writeAll(chunk, fd: state.fd, path: segment.url.path)
            segment.bytes += chunk.count
            state.unackedBytes += chunk.count
            state.segments.append(segment)
        }
    }

    private func closeSegment(_ state: inout State) {
        if state.fd >= 0 { close(state.fd) }
        state.fd = -1
        state.fdSegment = nil
    }

    /// Sorted ranges with overlapping and adjacent ones joined.
    static func merged(_ ranges: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        var result: [ClosedRange<UInt64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = result.last, range.lowerBound <= last.upperBound + 1 {
                result[result.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                result.append(range)
            }
        }
        return result
    }

    static func encode(_ entry: Relay_V1_StatusEntry) throws -> Data {
        let body = try entry.serializedBytes() as Data
        var record = Data()
        var length = UInt32(body.count).bigEndian
        withUnsafeBytes(of: &length) { record.append(contentsOf: $0) }
        record.append(body)
        record.append(contentsOf: SHA256.hash(data: body).prefix(4))
        return record
    }

    private static func load(_ url: URL) throws -> Segment {
        let data = (try? Data(contentsOf: url)) ?? Data()
        let (entries, offset) = records(in: data)
        if offset < data.count {
            // A torn tail from a crash: keep only the whole records.
            let handle = try FileHandle(forWritingTo: url)
            try handle.truncate(atOffset: UInt64(offset))
            try handle.synchronize()
            try handle.close()
        }
        let first = entries.first?.sequence ?? 0
        return Segment(first: first, url: url, bytes: offset, entries: entries)
    }

    /// The whole records at the start of a segment file's bytes, and where they end: reading
    /// stops at the first record that is short, fails its checksum or protobuf decoding, or does
    /// not continue the sequence.
    static func records(in data: Data) -> (entries: [Relay_V1_StatusEntry], length: Int) {
        var entries: [Relay_V1_StatusEntry] = []
        var offset = data.startIndex
        while offset + 8 <= data.endIndex {
            let length = data[offset..<offset + 4].reduce(0) { ($0 << 8) | Int($1) }
            let end = offset + 4 + length + 4
            guard length > 0, end <= data.endIndex else { break }
            let body = data[(offset + 4)..<(offset + 4 + length)]
            guard Data(SHA256.hash(data: body).prefix(4)) == data[(end - 4)..<end],
                  let entry = try? Relay_V1_StatusEntry(serializedBytes: Data(body)),
                  entry.sequence > (entries.last?.sequence ?? 0) else { break }
            entries.append(entry)
            offset = end
        }
        return (entries, offset - data.startIndex)
    }

    private static func writeAll(_ data: Data, fd: Int32, path: String) throws {
        try data.withUnsafeBytes { raw in
            var written = 0
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw JournalError.io("cannot write \(path): \(String(cString: strerror(errno)))")
                }
                written += n
            }
        }
    }

    private struct Meta: Codable { var journalID: String; var acknowledged: UInt64 }

    private static func readMeta(_ directory: URL) -> Meta {
        let url = directory.appendingPathComponent("journal.json")
        if let data = try? Data(contentsOf: url), let meta = try? JSONDecoder().decode(Meta.self, from: data) { return meta }
        return Meta(journalID: UUID().uuidString.lowercased(), acknowledged: 0)
    }

    private static func writeMeta(_ directory: URL, journalID: String, acknowledged: UInt64) throws {
        let data = try JSONEncoder().encode(Meta(journalID: journalID, acknowledged: acknowledged))
        let temporary = directory.appendingPathComponent("journal.json.\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        try data.write(to: temporary)
        let fd = open(temporary.path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(temporary.path, directory.appendingPathComponent("journal.json").path) == 0 else {
            throw JournalError.io("cannot replace journal.json: \(String(cString: strerror(errno)))")
        }
    }
}

public enum JournalError: Error, CustomStringConvertible {
    case io(String)
    case inUse(String)
    public var description: String {
        switch self {
        case .io(let message): "status journal: \(message) (is the data volume full or read-only?)"
        case .inUse(let path): "status journal \(path) is in use by another relay-agent process: one dataDir serves one agent"
        }
    }
}
