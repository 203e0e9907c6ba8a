/// How much one status entry may carry. The agent applies these before it journals an entry,
/// and the relay again before it stores one (an older or a hostile agent may send more): a
/// field over its cap keeps its beginning and says what was cut (`… [cut 812345 bytes]`), and
/// metadata entries left out are counted under `relay.truncated`. Applying them twice changes
/// nothing, so an entry cut by the agent reaches the relay's API as the agent cut it.
///
/// With these caps an entry is at most about 45 KiB (protobuf), far below the tunnel's message
/// limit; the agent sends entries in batches of at most `batchBytes`.
public enum StatusEntryLimits {
    /// A Flux event's or object's message (UTF-8 bytes).
    public static let messageBytes = 16 << 10
    /// Every other text field: kind, namespace, name, reason, revision, source, controller …
    public static let fieldBytes = 1 << 10
    /// Metadata of a Flux event: entries, key and value sizes, and their total.
    public static let metadataEntries = 32
    public static let metadataKeyBytes = 256
    public static let metadataValueBytes = 2 << 10
    public static let metadataBytes = 16 << 10
    /// Where metadata says how many of its entries were left out (not counted against the caps).
    public static let truncatedKey = "relay.truncated"
    /// The largest status batch an agent sends in one tunnel message (at least one entry).
    public static let batchBytes = 1 << 20

    /// The entry with every field within its cap.
    public static func clamped(_ entry: Relay_V1_StatusEntry) -> Relay_V1_StatusEntry {
        var entry = entry
        switch entry.kind {
        case .object(var object)?:
            for path in [\Relay_V1_ObjectState.apiVersion, \.kind, \.namespace, \.name, \.state, \.reason,
                         \.revisionApplied, \.revisionAttempted, \.source] {
                object[keyPath: path] = clamp(object[keyPath: path], to: fieldBytes)
            }
            object.message = clamp(object.message, to: messageBytes)
            entry.kind = .object(object)
        case .event(var event)?:
            for path in [\Relay_V1_FluxEvent.kind, \.namespace, \.name, \.severity, \.reason, \.revision, \.controller] {
                event[keyPath: path] = clamp(event[keyPath: path], to: fieldBytes)
            }
            event.message = clamp(event.message, to: messageBytes)
            event.metadata = clamp(metadata: event.metadata)
            entry.kind = .event(event)
        case .gap(var gap)?:
            gap.reason = clamp(gap.reason, to: fieldBytes)
            entry.kind = .gap(gap)
        case nil:
            break
        }
        return entry
    }

    /// `text` if it fits in `limit` UTF-8 bytes; otherwise its beginning (whole characters) and
    /// `… [cut N bytes]`, together within `limit`.
    public static func clamp(_ text: String, to limit: Int) -> String {
        let size = text.utf8.count
        guard size > limit else { return text }
        // The marker's length with the largest count it could carry.
        let room = max(0, limit - marker(size).utf8.count)
        var end = text.utf8.index(text.utf8.startIndex, offsetBy: room)
        while end > text.utf8.startIndex, end.samePosition(in: text.unicodeScalars) == nil {
            end = text.utf8.index(before: end)
        }
        let kept = text.utf8[..<end].count
        return String(Substring(text.unicodeScalars[..<end])) + marker(size - kept)
    }

    /// Metadata within the caps: entries kept in key order (`revision` first), each key and
    /// value clamped, until the count or the total would pass its cap; what is left out is
    /// counted under `truncatedKey`.
    public static func clamp(metadata: [String: String]) -> [String: String] {
        var note = metadata[truncatedKey]
        let keys = metadata.keys.filter { $0 != truncatedKey }.sorted { ($0 == "revision" ? 0 : 1, $0) < ($1 == "revision" ? 0 : 1, $1) }
        var kept: [String: String] = [:]
        var total = 0, dropped = 0, droppedBytes = 0
        for key in keys {
            let value = metadata[key]!
            let shortKey = clamp(key, to: metadataKeyBytes), shortValue = clamp(value, to: metadataValueBytes)
            let size = shortKey.utf8.count + shortValue.utf8.count
            if kept.count >= metadataEntries || total + size > metadataBytes || kept[shortKey] != nil {
                dropped += 1
                droppedBytes += key.utf8.count + value.utf8.count
                continue
            }
            kept[shortKey] = shortValue
            total += size
        }
        if dropped > 0 { note = "cut \(dropped) of \(keys.count) entries (\(droppedBytes) bytes)" }
        if let note { kept[truncatedKey] = clamp(note, to: fieldBytes) }
        return kept
    }

    static func marker(_ cut: Int) -> String { "… [cut \(cut) bytes]" }
}
