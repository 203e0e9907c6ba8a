import Testing
import Wire

/// The status entry caps: what is cut says so, stays valid UTF-8, and a second pass (the
/// relay after the agent) changes nothing.
@Suite struct StatusEntryLimitsTests {
    @Test func longTextKeepsWholeCharactersAndSaysWhatWasCut() {
        let text = String(repeating: "é🙂", count: 10_000)  // 2 + 4 bytes each
        let cut = StatusEntryLimits.clamp(text, to: 1000)
        #expect(cut.utf8.count <= 1000)
        #expect(cut.hasPrefix("é🙂é🙂"))
        // The marker counts exactly the bytes left out.
        let marker = cut.range(of: "… [cut ")!
        let kept = cut[..<marker.lowerBound]
        #expect(cut[marker.lowerBound...] == "… [cut \(text.utf8.count - kept.utf8.count) bytes]")
        #expect(StatusEntryLimits.clamp(cut, to: 1000) == cut)
        #expect(StatusEntryLimits.clamp("short", to: 1000) == "short")
    }

    @Test func metadataKeepsRevisionFirstCountsWhatIsLeftOutAndIsStableOnASecondPass() {
        var metadata = ["revision": "main@sha1:" + String(repeating: "0", count: 40)]
        for n in 0..<100 { metadata["k\(n)"] = String(repeating: "v", count: 3000) }
        let first = StatusEntryLimits.clamp(metadata: metadata)
        #expect(first["revision"] == metadata["revision"])
        #expect(first.count <= StatusEntryLimits.metadataEntries + 1)
        #expect(first.values.allSatisfy { $0.utf8.count <= StatusEntryLimits.metadataValueBytes })
        #expect(first[StatusEntryLimits.truncatedKey]?.hasPrefix("cut ") == true)
        #expect(StatusEntryLimits.clamp(metadata: first) == first)

        let entry = Relay_V1_StatusEntry.with {
            $0.sequence = 7
            $0.event = .with {
                $0.name = String(repeating: "n", count: 5000)
                $0.message = String(repeating: "m", count: 100_000)
                $0.metadata = metadata
            }
        }
        let clamped = StatusEntryLimits.clamped(entry)
        #expect(clamped.sequence == 7)
        #expect(clamped.event.name.utf8.count <= StatusEntryLimits.fieldBytes)
        #expect(clamped.event.message.utf8.count <= StatusEntryLimits.messageBytes)
        #expect(StatusEntryLimits.clamped(clamped) == clamped)
        #expect(((try? clamped.serializedBytes() as [UInt8])?.count ?? .max) < 48 << 10)
    }
}
