import Crypto
import Foundation
@testable import RelayAgent
import Wire

/// The status journal's segment reader (`StatusJournal.records(in:)`): what relay-agent reads
/// back from `seg-*.log` after a crash, torn writes included.
///
/// Input: one mode byte, then the body. Even mode: the body is the file. Odd mode: the body
/// is a list of protobuf bodies (a length byte, then that many bytes), which the harness
/// frames as records with correct lengths and checksums, so the fuzzer reaches the protobuf
/// and sequence checks; mode bit 1 appends the remaining bytes as a torn tail.
///
/// Invariants: the records read end within the file, in strictly increasing sequence order;
/// cutting the file back to what was read (as the journal does) reads the same records;
/// writing those records again with the journal's own encoder reads them back unchanged.
enum StatusJournalTarget {
    static func run(_ input: Data) {
        guard let mode = input.first else { return }
        var body = input.dropFirst()
        let file: Data
        if mode & 1 == 0 {
            file = Data(body)
        } else {
            var framed = Data()
            while let count = body.first, body.count > Int(count) {
                framed.append(record(body.dropFirst().prefix(Int(count))))
                body = body.dropFirst(Int(count) + 1)
            }
            if mode & 2 != 0 { framed.append(contentsOf: body) }
            file = framed
        }
        let (entries, length) = StatusJournal.records(in: file)
        require(length >= 0 && length <= file.count, "read \(length) of \(file.count) bytes")
        require(entries.isEmpty == (length == 0), "\(entries.count) entries in \(length) bytes")
        var previous: UInt64 = 0
        for entry in entries {
            require(entry.sequence > previous, "sequence \(entry.sequence) after \(previous)")
            previous = entry.sequence
        }
        let cut = StatusJournal.records(in: file.prefix(length))
        require(cut.entries == entries && cut.length == length, "the truncated file reads differently")
        // A slice that does not start at index 0 (the reader must not assume it does).
        let shifted = StatusJournal.records(in: (Data([0]) + file).dropFirst())
        require(shifted.entries == entries && shifted.length == length, "reading depends on the buffer's start index")
        do {
            let rewritten = try entries.reduce(into: Data()) { $0.append(try StatusJournal.encode($1)) }
            let back = StatusJournal.records(in: rewritten)
            require(back.entries == entries && back.length == rewritten.count, "re-encoded records read differently")
        } catch {
            fatalError("a record read back does not encode: \(error)")
        }
    }

    /// A record as the journal writes it: 4-byte big-endian length, body, 4 checksum bytes.
    private static func record(_ body: Data) -> Data {
        var record = Data()
        let length = UInt32(body.count)
        record.append(contentsOf: [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)])
        record.append(body)
        record.append(contentsOf: SHA256.hash(data: body).prefix(4))
        return record
    }
}
