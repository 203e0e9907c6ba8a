import Foundation
@testable import RelayAgent
import Testing
import Wire

/// The agent's on-disk status journal: durable, ordered, trimmed only on acknowledgement,
/// bounded with an explicit gap, and intact across a torn write.
@Suite struct StatusJournalTests {
    static func event(_ n: Int) -> Relay_V1_StatusEntry.OneOf_Kind {
        .event(.with { $0.kind = "Kustomization"; $0.name = "app"; $0.message = "event \(n)" })
    }

    /// Closes `journal` (releasing its lock) and opens the directory again.
    static func reopen(_ journal: inout StatusJournal, _ dir: TemporaryDirectory) throws -> StatusJournal {
        journal = try StatusJournal(directory: dir.url.appendingPathComponent("placeholder-\(UUID().uuidString)"))
        return try openAgain(dir.url)
    }

    /// Opens a journal this process just closed. Tests running in parallel spawn processes: a
    /// child between fork and exec holds a copy of every descriptor (CLOEXEC closes them only
    /// at exec), the journal's locked one too, so the lock can outlive the close by as long as
    /// a loaded machine takes to reach that exec. Waits for that, up to 20 s.
    static func openAgain(_ url: URL) throws -> StatusJournal {
        let deadline = Date().addingTimeInterval(20)
        while true {
            do { return try StatusJournal(directory: url) } catch JournalError.inUse where Date() < deadline {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    @Test func sequencesSurviveRestartsAndOnlyAcknowledgedEntriesGo() throws {
        let dir = try TemporaryDirectory(prefix: "journal")
        defer { dir.remove() }
        var journal = try StatusJournal(directory: dir.url)
        let id = journal.summary.journalID
        #expect(try journal.append((1...10).map(Self.event)) == Array(1...10))
        try journal.acknowledge(upTo: 4)
        #expect(journal.entries(after: 0, limit: 100).map(\.sequence) == Array(5...10))
        // One writer at a time: a second open of the same journal is refused.
        #expect(throws: JournalError.self) { try StatusJournal(directory: dir.url) }
        // Reopen: same journal, same unacknowledged entries, numbering continues.
        journal = try Self.reopen(&journal, dir)
        #expect(journal.summary.journalID == id)
        #expect(journal.entries(after: 0, limit: 100).map(\.sequence) == Array(5...10))
        #expect(try journal.append([Self.event(11)]) == [11])
        try journal.acknowledge(upTo: 11)
        #expect(journal.summary.backlog == 0)
        // Everything acknowledged: the numbering still continues after a restart.
        journal = try Self.reopen(&journal, dir)
        #expect(try journal.append([Self.event(12)]) == [12])
        #expect(journal.entries(after: 11, limit: 5).first?.event.message == "event 12")
    }

    @Test func aTornWriteLosesOnlyTheTornRecord() throws {
        let dir = try TemporaryDirectory(prefix: "journal-torn")
        defer { dir.remove() }
        var journal: StatusJournal? = try StatusJournal(directory: dir.url)
        try journal?.append((1...5).map(Self.event))
        journal = nil  // closed, as by a crash
        let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).first { $0.hasPrefix("seg-") })
        let url = dir.url.appendingPathComponent(segment)
        var bytes = try Data(contentsOf: url)
        let whole = bytes.count
        bytes.append(contentsOf: [0, 0, 0, 40, 1, 2, 3])  // half a record, as a crash mid-write leaves it
        try bytes.write(to: url)
        var reopened: StatusJournal? = try Self.openAgain(dir.url)
        #expect(reopened!.entries(after: 0, limit: 100).map(\.sequence) == Array(1...5))
        #expect(try Data(contentsOf: url).count == whole)
        #expect(try reopened!.append([Self.event(6)]) == [6])
        reopened = nil
        // A flipped byte inside the last record: that record is dropped, the rest kept.
        var damaged = try Data(contentsOf: url)
        damaged[damaged.count - 6] ^= 0xFF
        try damaged.write(to: url)
        #expect(try Self.openAgain(dir.url).entries(after: 0, limit: 100).map(\.sequence) == Array(1...5))
    }

    @Test func aFullJournalDropsTheOldestAndSaysSo() throws {
        let dir = try TemporaryDirectory(prefix: "journal-full")
        defer { dir.remove() }
        let journal = try StatusJournal(directory: dir.url, maxBytes: 64 << 10, segmentBytes: 8 << 10)
        let big = String(repeating: "x", count: 900)
        for n in 1...200 {
            try journal.append([.event(.with { $0.kind = "Kustomization"; $0.name = "app"; $0.message = "\(n) \(big)" })])
        }
        let summary = journal.summary
        #expect(summary.backlogBytes <= 64 << 10)
        #expect(summary.gaps > 0)
        let entries = journal.entries(after: 0, limit: 10_000)
        let gaps = entries.compactMap { entry -> Relay_V1_Gap? in if case .gap(let gap)? = entry.kind { gap } else { nil } }
        #expect(!gaps.isEmpty)
        // What was dropped is exactly what the gap markers name: every sequence is either
        // present or inside a gap, none twice.
        var accounted = Set(entries.map(\.sequence))
        for gap in gaps {
            for sequence in gap.first...gap.last { #expect(accounted.insert(sequence).inserted, "\(sequence) twice") }
        }
        #expect(accounted == Set(1...(summary.nextSequence - 1)))
        #expect(entries.map(\.sequence) == entries.map(\.sequence).sorted())
    }

    @Test func concurrentAppendsShareFsyncsAndKeepEverySequenceOnce() throws {
        let dir = try TemporaryDirectory(prefix: "journal-concurrent")
        defer { dir.remove() }
        var opened: StatusJournal? = try StatusJournal(directory: dir.url, segmentBytes: 16 << 10)
        let journal = opened!
        let group = DispatchGroup()
        let failures = NSLock()
        nonisolated(unsafe) var errors: [any Error] = []
        for thread in 0..<8 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                for n in 0..<200 {
                    do { try journal.append([Self.event(thread * 1000 + n)]) } catch {
                        failures.lock(); errors.append(error); failures.unlock()
                    }
                }
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        #expect(errors.isEmpty)
        let entries = journal.entries(after: 0, limit: 10_000)
        #expect(entries.map(\.sequence) == Array(1...1600))
        // What a restart reads back is exactly what readers saw.
        let messages = entries.map(\.event.message)
        opened = nil
        _ = consume journal
        #expect(try Self.openAgain(dir.url).entries(after: 0, limit: 10_000).map(\.event.message) == messages)
    }
}
