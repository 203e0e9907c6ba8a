import CLibGit2
import Foundation

/// A 40-hex SHA-1 object id.
public struct ObjectID: Sendable, Hashable, CustomStringConvertible {
    public let hex: String

    init(_ oid: git_oid) {
        var copy = oid
        var buffer = [CChar](repeating: 0, count: 41)
        git_oid_fmt(&buffer, &copy)
        hex = String(decoding: buffer[0..<40].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Accepts exactly 40 hex digits (either case).
    public init?(hex: String) {
        guard hex.count == 40, hex.allSatisfy(\.isHexDigit) else { return nil }
        self.hex = hex.lowercased()
    }

    var raw: git_oid {
        var oid = git_oid()
        _ = git_oid_fromstr(&oid, hex)
        return oid
    }

    public var description: String { hex }
}

/// Owns one libgit2 repository handle.
///
/// Confinement rule: libgit2 handles are not thread-safe, so a `GitRepository` is created,
/// used and freed on one thread (the blocking worker of one pack job) and never shared.
final class GitRepository {
    let pointer: OpaquePointer

    private init(pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit { git_repository_free(pointer) }

    static func openBare(at path: String) throws(GitError) -> GitRepository {
        GitRuntime.ensureInitialized()
        var repo: OpaquePointer?
        try gitCheck(git_repository_open_bare(&repo, path))
        return GitRepository(pointer: repo!)
    }

    static func initBare(at path: String) throws(GitError) -> GitRepository {
        GitRuntime.ensureInitialized()
        var repo: OpaquePointer?
        try gitCheck(git_repository_init(&repo, path, 1))
        return GitRepository(pointer: repo!)
    }

    /// The commit a reference finally points to (annotated tags peeled), or nil if the
    /// reference does not exist.
    func commit(forReference name: String) throws(GitError) -> ObjectID? {
        var oid = git_oid()
        let status = git_reference_name_to_id(&oid, pointer, name)
        if status == GIT_ENOTFOUND.rawValue { return nil }
        try gitCheck(status)
        // Look the object up ourselves: git_reference_peel would replace an object-database
        // error (a damaged mirror) with a generic "cannot be peeled".
        var object: OpaquePointer?
        try gitCheck(git_object_lookup(&object, pointer, &oid, GIT_OBJECT_ANY))
        defer { git_object_free(object) }
        var commit: OpaquePointer?
        try gitCheck(git_object_peel(&commit, object, GIT_OBJECT_COMMIT))
        defer { git_object_free(commit) }
        return ObjectID(git_object_id(commit).pointee)
    }

    /// Whether `id` names a commit present in the object database.
    func hasCommit(_ id: ObjectID) throws(GitError) -> Bool {
        var oid = id.raw
        var commit: OpaquePointer?
        let status = git_commit_lookup(&commit, pointer, &oid)
        if status == GIT_ENOTFOUND.rawValue { return false }
        try gitCheck(status)
        git_commit_free(commit)
        return true
    }

    /// Whether `ancestor` is `tip` or reachable from it.
    func isAncestor(_ ancestor: ObjectID, of tip: ObjectID) throws(GitError) -> Bool {
        if ancestor == tip { return true }
        var a = tip.raw, b = ancestor.raw
        let result = git_graph_descendant_of(pointer, &a, &b)
        try gitCheck(result)
        return result == 1
    }

    /// The root tree of a commit.
    func rootTree(ofCommit id: ObjectID) throws(GitError) -> GitTree {
        var oid = id.raw
        var commit: OpaquePointer?
        try gitCheck(git_commit_lookup(&commit, pointer, &oid))
        defer { git_commit_free(commit) }
        var tree: OpaquePointer?
        try gitCheck(git_commit_tree(&tree, commit))
        return GitTree(pointer: tree!)
    }

    func tree(_ oid: git_oid) throws(GitError) -> GitTree {
        var copy = oid
        var tree: OpaquePointer?
        try gitCheck(git_tree_lookup(&tree, pointer, &copy))
        return GitTree(pointer: tree!)
    }

    /// Reads a blob and hands its bytes to `body` (valid only during the call).
    func withBlob<T>(_ oid: git_oid, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        var copy = oid
        var blob: OpaquePointer?
        do { try gitCheck(git_blob_lookup(&blob, pointer, &copy)) } catch { throw error }
        defer { git_blob_free(blob) }
        let size = Int(git_blob_rawsize(blob))
        return try body(UnsafeRawBufferPointer(start: git_blob_rawcontent(blob), count: size))
    }
}

/// One tree object; entries are read eagerly into values.
final class GitTree {
    let pointer: OpaquePointer

    init(pointer: OpaquePointer) { self.pointer = pointer }
    deinit { git_tree_free(pointer) }

    struct Entry {
        var name: [UInt8]
        var mode: UInt32
        var oid: git_oid

        var isTree: Bool { mode == GIT_FILEMODE_TREE.rawValue }
        var isRegularFile: Bool {
            mode == GIT_FILEMODE_BLOB.rawValue || mode == GIT_FILEMODE_BLOB_EXECUTABLE.rawValue
        }
        var isExecutable: Bool { mode == GIT_FILEMODE_BLOB_EXECUTABLE.rawValue }
        var isSymlink: Bool { mode == GIT_FILEMODE_LINK.rawValue }
        var isSubmodule: Bool { mode == GIT_FILEMODE_COMMIT.rawValue }
    }

    /// Entries in the order Go's `filepath.Walk` visits a checkout: byte-wise by name.
    /// (Git's own tree order sorts directories as if they ended in `/`.)
    func entriesInWalkOrder() -> [Entry] {
        let count = git_tree_entrycount(pointer)
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        for index in 0..<count {
            guard let entry = git_tree_entry_byindex(pointer, index) else { continue }
            let cName = git_tree_entry_name(entry)!
            let name = Array(UnsafeBufferPointer(start: UnsafeRawPointer(cName).assumingMemoryBound(to: UInt8.self),
                                                 count: strlen(cName)))
            entries.append(Entry(name: name, mode: git_tree_entry_filemode(entry).rawValue,
                                 oid: git_tree_entry_id(entry).pointee))
        }
        entries.sort { $0.name.lexicographicallyPrecedes($1.name) }
        return entries
    }
}
