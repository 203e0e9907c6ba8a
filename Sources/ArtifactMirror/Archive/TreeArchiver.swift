import CLibGit2
import Foundation

/// A path left out of an artifact, and why.
public struct SkippedPath: Sendable, Codable, Hashable {
    public enum Reason: String, Sendable, Codable {
        /// Flux drops symlinks when it archives a checkout and again when it untars.
        case symlink
        /// Submodules are not fetched; Flux without `recurseSubmodules` has no content there.
        case submodule
        /// The name is not UTF-8; a Flux artifact's names must be.
        case nonUTF8Name = "non-utf8-name"
        /// Flux's untar rejects any name containing a backslash, which would break the
        /// whole artifact; the entry (and anything below it) is left out instead.
        case backslashInName = "backslash-in-name"
        /// `.`, `..` or an empty name: only a hand-crafted tree holds one, and it would make
        /// Flux reject the artifact (or write outside its directory).
        case unsafeName = "unsafe-name"
    }

    public var path: String
    public var reason: Reason
}

/// What went into an archive.
struct ArchiveSummary {
    var files = 0
    var directories = 0
    var excluded = 0
    var contentBytes: UInt64 = 0
    var skipped: [SkippedPath] = []
}

/// Streams the tree of one commit into a tar stream with Flux's walk order, filtering and
/// header rules (spec §1.2–§1.5), reading blobs straight from the object database: nothing
/// is checked out on disk and only one blob is in memory at a time.
final class TreeArchiver {
    typealias Progress = (_ files: Int, _ bytes: UInt64) -> Void

    private let repository: GitRepository
    private let extraPatterns: [IgnorePattern]
    private let progress: Progress?
    private var summary = ArchiveSummary()
    private var rules = IgnoreRules(userPatterns: [])

    /// - Parameter extraPatterns: the user's patterns (GitRepository `.spec.ignore`), which
    ///   take priority over every `.sourceignore` file.
    init(repository: GitRepository, extraPatterns: [IgnorePattern], progress: Progress? = nil) {
        self.repository = repository
        self.extraPatterns = extraPatterns
        self.progress = progress
    }

    func archive(commit: ObjectID, into output: ParallelGzipWriter) throws -> ArchiveSummary {
        summary = ArchiveSummary()
        let root = try repository.rootTree(ofCommit: commit)
        var userPatterns: [IgnorePattern] = []
        try collectSourceIgnorePatterns(in: root, domain: [], into: &userPatterns)
        rules = IgnoreRules(userPatterns: userPatterns + extraPatterns)

        try output.write(TarHeader.encode(name: [UInt8(ascii: ".")], kind: .directory))
        summary.directories += 1
        try walk(root, components: [], path: [], into: output)
        try output.write(TarHeader.endOfArchive)
        progress?(summary.files, summary.contentBytes)
        return summary
    }

    /// `.sourceignore` files as Flux's `LoadIgnorePatterns` reads them: this directory's
    /// file first, then each subdirectory (lexical order, `.git` skipped) recursively.
    private func collectSourceIgnorePatterns(in tree: GitTree, domain: [String], into patterns: inout [IgnorePattern]) throws {
        let entries = tree.entriesInWalkOrder()
        if let file = entries.first(where: { $0.name == Array(IgnoreRules.ignoreFileName.utf8) && $0.isRegularFile }) {
            let bytes = try repository.withBlob(file.oid) { [UInt8]($0) }
            patterns += IgnorePattern.parse(bytes: bytes, domain: domain)
        }
        for entry in entries where entry.isTree {
            guard let name = String(validating: entry.name, as: UTF8.self), name != ".git" else { continue }
            try collectSourceIgnorePatterns(in: try repository.tree(entry.oid), domain: domain + [name], into: &patterns)
        }
    }

    private func walk(_ tree: GitTree, components: [String], path: [UInt8], into output: ParallelGzipWriter) throws {
        for entry in tree.entriesInWalkOrder() {
            let childPath = path.isEmpty ? entry.name : path + [UInt8(ascii: "/")] + entry.name
            guard let name = String(validating: entry.name, as: UTF8.self) else {
                skip(childPath, .nonUTF8Name)
                continue
            }
            if name.contains("\\") {
                skip(childPath, .backslashInName)
                continue
            }
            if name.isEmpty || name == "." || name == ".." {
                skip(childPath, .unsafeName)
                continue
            }
            let childComponents = components + [name]
            if entry.isTree {
                // Excluding a directory drops only its own header: Flux still walks into it
                // and tests every child on its own (a later `!pattern` can bring one back).
                if !rules.isExcluded(childComponents, isDirectory: true) {
                    try output.write(TarHeader.encode(name: childPath, kind: .directory))
                    summary.directories += 1
                } else {
                    summary.excluded += 1
                }
                try walk(try repository.tree(entry.oid), components: childComponents, path: childPath, into: output)
            } else if entry.isRegularFile {
                if rules.isExcluded(childComponents, isDirectory: false) {
                    summary.excluded += 1
                    continue
                }
                try writeFile(entry, name: childPath, into: output)
            } else if !rules.isExcluded(childComponents, isDirectory: false) {
                skip(childPath, entry.isSymlink ? .symlink : .submodule)
            }
        }
    }

    private func writeFile(_ entry: GitTree.Entry, name: [UInt8], into output: ParallelGzipWriter) throws {
        try repository.withBlob(entry.oid) { content in
            let size = UInt64(content.count)
            try output.write(TarHeader.encode(name: name, kind: .file(size: size, executable: entry.isExecutable)))
            try output.write(content)
            let pad = TarHeader.padding(for: size)
            if pad > 0 { try output.write([UInt8](repeating: 0, count: pad)) }
            summary.files += 1
            summary.contentBytes += size
        }
        if summary.files % 500 == 0 { progress?(summary.files, summary.contentBytes) }
    }

    private func skip(_ path: [UInt8], _ reason: SkippedPath.Reason) {
        summary.skipped.append(SkippedPath(path: String(decoding: path, as: UTF8.self), reason: reason))
    }
}
