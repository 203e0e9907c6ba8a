import ArtifactMirror
import Foundation

/// The last relay bundle this agent imported: `<dataDir>/bundles/state.json`
/// (`{"lastSequence": …, "lastImportedUnixMs": …}`; absent: nothing imported yet). A bundle
/// whose sequence is not greater is a replay and is refused.
public enum BundleState {
    struct Stored: Codable {
        var lastSequence: UInt64
        var lastImportedUnixMs: Int64
    }

    public static func url(dataDirectory: URL) -> URL { dataDirectory.appendingPathComponent("bundles/state.json") }

    /// (0, 0) when nothing was imported.
    public static func load(dataDirectory: URL) -> (lastSequence: UInt64, lastImportedUnixMs: Int64) {
        guard let data = try? Data(contentsOf: url(dataDirectory: dataDirectory)),
              let stored = try? JSONDecoder().decode(Stored.self, from: data) else { return (0, 0) }
        return (stored.lastSequence, stored.lastImportedUnixMs)
    }

    /// The state for an import decision: absent is (0, 0), but a file that exists and cannot be
    /// read throws (it must never read as "nothing imported": that would admit any old bundle).
    public static func loadForImport(dataDirectory: URL) throws -> (lastSequence: UInt64, lastImportedUnixMs: Int64) {
        let file = url(dataDirectory: dataDirectory)
        guard FileManager.default.fileExists(atPath: file.path) else { return (0, 0) }
        let stored = try JSONDecoder().decode(Stored.self, from: try Data(contentsOf: file))
        return (stored.lastSequence, stored.lastImportedUnixMs)
    }

    /// Records an import, atomically and durably.
    public static func save(dataDirectory: URL, lastSequence: UInt64, importedAt: Date) throws {
        let file = url(dataDirectory: dataDirectory)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(Stored(lastSequence: lastSequence, lastImportedUnixMs: Int64((importedAt.timeIntervalSince1970 * 1000).rounded())))
        try FileSystem.writeAtomically(data, to: file.path)
    }
}
