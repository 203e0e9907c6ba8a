import Foundation

/// A Helm chart `.tgz` checked before anything serves it: Flux's unpack rules
/// (`TarballVerifier`), plus what Helm's loader expects and what no chart needs: every entry
/// under one top directory, a `Chart.yaml` there, and no links of any kind (a symlink in a
/// chart is refused, though Flux would only drop it from a Git artifact).
public struct ChartArchive: Sendable {
    /// The chart's directory name inside the archive (the chart name for `helm package`).
    public let directory: String
    /// `<directory>/Chart.yaml`, as stored.
    public let chartYAML: Data
    public let digest: String
    public let size: UInt64
    public let files: Int

    /// Largest sum of file sizes accepted (Helm's loader caps a decompressed chart at 100 MiB).
    public static let maxUnpackedSize: UInt64 = 100 << 20

    public init(file path: String, expectedDigest: String? = nil) throws(ArtifactMirrorError) {
        // Chart.yaml's path is only known from the first entry: capture every candidate name.
        let verifier = TarballVerifier(expectedDigest: expectedDigest, maxUnpackedSize: Self.maxUnpackedSize)
        let first = try verifier.inspect(file: path, capture: [])
        var problems = first.report.errors
        guard let top = first.tar.names.first?.name.split(separator: "/").first.map(String.init), problems.isEmpty else {
            throw .invalidArgument("not a usable chart archive: " + (problems.isEmpty ? "it is empty" : problems.prefix(5).joined(separator: "; ")))
        }
        guard first.tar.names.count == first.report.entries else {
            throw .invalidArgument("refusing the chart archive: more than \(first.tar.names.count) entries")
        }
        // Helm's loader keeps the last of two entries with one name; Relay keeps neither.
        var seen = Set<String>()
        for (name, _) in first.tar.names where !seen.insert(name).inserted {
            problems.append("'\(name)' appears twice")
            if problems.count >= 5 { break }
        }
        for (name, type) in first.tar.names {
            if type == UInt8(ascii: "2") || type == UInt8(ascii: "1") { problems.append("'\(name)' is a link; a chart holds files only") }
            let component = name.split(separator: "/").first.map(String.init) ?? ""
            if component != top || name.split(separator: "/").contains("..") {
                problems.append("'\(name)' is outside the chart directory '\(top)/'")
            }
            if problems.count >= 5 { break }
        }
        guard problems.isEmpty else { throw .invalidArgument("refusing the chart archive: " + problems.joined(separator: "; ")) }
        let second = try verifier.inspect(file: path, capture: ["\(top)/Chart.yaml"])
        guard let chart = second.tar.captured["\(top)/Chart.yaml"] else {
            throw .invalidArgument("refusing the chart archive: no \(top)/Chart.yaml (or it is larger than 1 MiB)")
        }
        directory = top
        chartYAML = Data(chart)
        digest = second.report.digest
        size = second.report.size
        files = second.report.files
    }
}
