import Foundation

/// A unified diff between two file trees, in the form git prints it.
///
/// The output is byte-for-byte what
/// `git -c core.quotepath=off diff --no-index --no-color --no-renames --no-ext-diff -U3 <oldLabel> <newLabel>`
/// prints for two directories holding the given files (with no git configuration changing diff
/// output, e.g. `GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1`, and run outside a repository
/// so that object names are abbreviated to 7 digits). That includes:
///
/// - git's `--no-index` path form: `a/<oldLabel>/<path>` and `b/<newLabel>/<path>`, so the default
///   labels give `diff --git a/a/x b/b/x`; an added file shows its new-side path on both sides
///   (`a/b/x b/b/x`), a deleted one its old-side path. With an empty label the path is shown
///   without a directory component (`a/x b/x`, the form `git diff` prints inside a repository).
/// - `index` lines from `blobID`, `new file mode 100644` / `deleted file mode 100644`
///   (every file is taken to be a regular, non-executable file), C-style quoting of paths holding
///   `"`, `\` or control characters, the tab git appends to `---`/`+++` names containing a space,
///   `Binary files … differ` when either side has a NUL byte in its first 8000 bytes,
///   `\ No newline at end of file`, and git's default hunk-header function names.
/// - git's order: names compared bytewise one directory level at a time (so `foo/x` comes before
///   `foo-bar`); where a path is a file on one side and a directory on the other, the file is
///   shown first.
///
/// Line matching follows git's default ("myers") algorithm: common head and tail trimming,
/// discarding of lines without a counterpart, the divide-and-conquer Myers O(ND) search with git's
/// cost heuristics, and the sliding of changed blocks with the indent heuristic, so that ambiguous
/// inputs (repeated lines, moved blocks) give the same hunks as git. Where the output may
/// legitimately differ from git (it is still a valid diff that `git apply` accepts):
///
/// - a file pair whose line search exceeds ``LineDiff/workLimit`` steps is shown as "delete all
///   differing lines, insert all" between the common head and tail, where git would keep searching;
/// - output that is not valid UTF-8 (file contents in another encoding) has invalid bytes replaced
///   by U+FFFD in the returned `String`;
/// - paths are Swift `String`s, so two keys that differ only in Unicode normalisation are one key.
public enum TreeDiff {
    /// The patch turning the `old` tree into the `new` tree; empty when they are equal.
    ///
    /// - Parameters:
    ///   - old: relative path (`/`-separated) → contents, for the old tree.
    ///   - new: the same for the new tree.
    ///   - oldLabel: the old directory's name as passed to `git diff --no-index`.
    ///   - newLabel: the new directory's name.
    ///   - blobID: the git object name of a blob with the given contents, in hex (SHA-1 of
    ///     `"blob <size>\0"` followed by the contents); only its first 7 digits are used.
    public static func unified(
        old: [String: Data],
        new: [String: Data],
        oldLabel: String = "a",
        newLabel: String = "b",
        blobID: (Data) -> String
    ) -> String {
        String(decoding: unifiedBytes(old: old, new: new, oldLabel: oldLabel, newLabel: newLabel, blobID: blobID),
               as: UTF8.self)
    }

    /// ``unified(old:new:oldLabel:newLabel:blobID:)`` as raw bytes, exact even for non-UTF-8 text.
    static func unifiedBytes(
        old: [String: Data],
        new: [String: Data],
        oldLabel: String = "a",
        newLabel: String = "b",
        blobID: (Data) -> String
    ) -> [UInt8] {
        var out: [UInt8] = []
        for pair in TreeWalk.pairs(old: TreeNode(files: old), new: TreeNode(files: new)) {
            FileSection.write(pair, oldLabel: oldLabel, newLabel: newLabel, blobID: blobID, into: &out)
        }
        return out
    }
}

// MARK: - Trees

/// One directory of a file tree: its files and its subdirectories, by name.
struct TreeNode {
    var files: [String: Data] = [:]
    var dirs: [String: TreeNode] = [:]

    init() {}

    /// The tree holding `files`, keyed by `/`-separated relative paths (empty components ignored).
    init(files: [String: Data]) {
        for (path, data) in files {
            let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
            if !parts.isEmpty { insert(parts[...], data) }
        }
    }

    private mutating func insert(_ parts: ArraySlice<String>, _ data: Data) {
        let name = parts[parts.startIndex]
        if parts.count == 1 {
            files[name] = data
        } else {
            dirs[name, default: TreeNode()].insert(parts.dropFirst(), data)
        }
    }
}

/// A path present in at least one tree, with its contents on each side (`nil`: absent).
struct FilePair {
    var path: String
    var old: Data?
    var new: Data?
}

/// Pairs the files of two trees in the order `git diff --no-index` visits them.
enum TreeWalk {
    static func pairs(old: TreeNode, new: TreeNode) -> [FilePair] {
        var result: [FilePair] = []
        walk(old, new, prefix: "", into: &result)
        return result
    }

    /// Visits one directory level: names in bytewise order; for each name the file pair first,
    /// then the directory pair (git shows a file replaced by a directory, or the reverse, that way).
    private static func walk(_ old: TreeNode?, _ new: TreeNode?, prefix: String, into result: inout [FilePair]) {
        var names = Set<String>()
        for node in [old, new].compactMap({ $0 }) {
            names.formUnion(node.files.keys)
            names.formUnion(node.dirs.keys)
        }
        for name in names.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            let path = prefix + name
            let oldFile = old?.files[name], newFile = new?.files[name]
            if oldFile != nil || newFile != nil {
                result.append(FilePair(path: path, old: oldFile, new: newFile))
            }
            let oldDir = old?.dirs[name], newDir = new?.dirs[name]
            if oldDir != nil || newDir != nil {
                walk(oldDir, newDir, prefix: path + "/", into: &result)
            }
        }
    }
}

// MARK: - One file's section

/// Writes the section of the patch for one file pair: `diff --git` header, mode and `index`
/// lines, then either the binary notice or the `---`/`+++` names and hunks.
enum FileSection {
    /// git's window for spotting binary contents (`FIRST_FEW_BYTES`).
    static let binarySniffLength = 8000

    static func write(_ pair: FilePair, oldLabel: String, newLabel: String,
                      blobID: (Data) -> String, into out: inout [UInt8]) {
        if pair.old == pair.new { return }
        // An added file is named after the new side on both sides, a deleted one after the old.
        let aLabel = pair.old != nil ? oldLabel : newLabel
        let bLabel = pair.new != nil ? newLabel : oldLabel
        let aName = GitQuote.path("a/" + join(aLabel, pair.path))
        let bName = GitQuote.path("b/" + join(bLabel, pair.path))

        out += Array("diff --git ".utf8) + aName + [0x20] + bName + [0x0A]
        func abbrev(_ data: Data?) -> String {
            guard let data else { return "0000000" }
            return String(blobID(data).prefix(7))
        }
        if pair.old == nil { out += Array("new file mode 100644\n".utf8) }
        if pair.new == nil { out += Array("deleted file mode 100644\n".utf8) }
        let mode = (pair.old != nil && pair.new != nil) ? " 100644" : ""
        out += Array("index \(abbrev(pair.old))..\(abbrev(pair.new))\(mode)\n".utf8)

        let minusLabel = pair.old != nil ? aName : Array("/dev/null".utf8)
        let plusLabel = pair.new != nil ? bName : Array("/dev/null".utf8)
        let oldBytes = [UInt8](pair.old ?? Data()), newBytes = [UInt8](pair.new ?? Data())
        if isBinary(oldBytes) || isBinary(newBytes) {
            out += Array("Binary files ".utf8) + minusLabel + Array(" and ".utf8) + plusLabel
                + Array(" differ\n".utf8)
            return
        }
        let hunks = UnifiedHunks.render(old: LineSplit(oldBytes), new: LineSplit(newBytes))
        if hunks.isEmpty { return }  // e.g. an added or deleted empty file
        out += Array("--- ".utf8) + minusLabel + (minusLabel.contains(0x20) ? [0x09] : []) + [0x0A]
        out += Array("+++ ".utf8) + plusLabel + (plusLabel.contains(0x20) ? [0x09] : []) + [0x0A]
        out += hunks
    }

    private static func join(_ label: String, _ path: String) -> String {
        label.isEmpty ? path : label + "/" + path
    }

    /// git's test: a NUL byte among the first 8000 bytes.
    static func isBinary(_ bytes: [UInt8]) -> Bool {
        bytes.prefix(binarySniffLength).contains(0)
    }
}

/// git's C-style quoting of a path (`quote_c_style`) with `core.quotepath=off`: the whole name
/// is put in double quotes when it holds `"`, `\`, a control character or DEL; bytes ≥ 0x80 are
/// left as they are.
enum GitQuote {
    static func path(_ name: String) -> [UInt8] {
        let bytes = Array(name.utf8)
        guard bytes.contains(where: needsQuoting) else { return bytes }
        var out: [UInt8] = [0x22]
        for byte in bytes {
            switch byte {
            case 0x07: out += Array("\\a".utf8)
            case 0x08: out += Array("\\b".utf8)
            case 0x09: out += Array("\\t".utf8)
            case 0x0A: out += Array("\\n".utf8)
            case 0x0B: out += Array("\\v".utf8)
            case 0x0C: out += Array("\\f".utf8)
            case 0x0D: out += Array("\\r".utf8)
            case 0x22: out += Array("\\\"".utf8)
            case 0x5C: out += Array("\\\\".utf8)
            case _ where byte < 0x20 || byte == 0x7F:
                out += [0x5C, 0x30 + (byte >> 6), 0x30 + ((byte >> 3) & 7), 0x30 + (byte & 7)]
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return out
    }

    private static func needsQuoting(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7F || byte == 0x22 || byte == 0x5C
    }
}

// MARK: - Lines

/// A file's contents cut into lines; each line keeps its `\n` (the last one may lack it).
struct LineSplit {
    let bytes: [UInt8]
    /// `starts[i] ..< starts[i + 1]` is line `i`; one more entry than there are lines.
    let starts: [Int]

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        var starts = [0]
        for (i, byte) in bytes.enumerated() where byte == 0x0A { starts.append(i + 1) }
        if starts.last != bytes.count { starts.append(bytes.count) }
        self.starts = starts
    }

    var count: Int { starts.count - 1 }

    func line(_ i: Int) -> ArraySlice<UInt8> { bytes[starts[i] ..< starts[i + 1]] }
}

/// Per-line "changed" marks for one file, readable one position past either end (always false
/// there), as the sliding and script-building steps expect.
struct ChangeFlags {
    private var storage: [Bool]
    let count: Int

    init(count: Int) {
        self.count = count
        storage = Array(repeating: false, count: count + 2)
    }

    subscript(i: Int) -> Bool {
        get { storage[i + 1] }
        set { storage[i + 1] = newValue }
    }
}

// MARK: - Line matching

/// Decides which lines of two files are changed, following git's xdiff "myers" algorithm step by
/// step so that the result (not only its size) is git's.
struct LineDiff {
    /// Upper bound on search steps per file pair before giving up on a minimal-ish match.
    static let workLimit = 100_000_000

    var oldChanged: ChangeFlags
    var newChanged: ChangeFlags

    init(old: LineSplit, new: LineSplit) {
        let classes = LineClasses(old: old, new: new)
        oldChanged = ChangeFlags(count: old.count)
        newChanged = ChangeFlags(count: new.count)
        let n1 = old.count, n2 = new.count

        // Common head and tail are never part of a change.
        var head = 0
        while head < min(n1, n2) && classes.old[head] == classes.new[head] { head += 1 }
        var tail = 0
        while tail < min(n1, n2) - head && classes.old[n1 - 1 - tail] == classes.new[n2 - 1 - tail] { tail += 1 }
        let end1 = n1 - tail, end2 = n2 - tail

        // Lines with no counterpart, and frequent lines amid such lines, are changed outright;
        // the rest go to the Myers search.
        let index1 = Self.keptLines(classes.old, head ..< end1, otherCounts: classes.newCounts, totalLines: n1)
        let index2 = Self.keptLines(classes.new, head ..< end2, otherCounts: classes.oldCounts, totalLines: n2)
        for i in head ..< end1 { oldChanged[i] = true }
        for i in head ..< end2 { newChanged[i] = true }
        for i in index1 { oldChanged[i] = false }
        for i in index2 { newChanged[i] = false }

        let search = MyersSearch(a: index1.map { classes.old[$0] }, b: index2.map { classes.new[$0] },
                                 budget: Self.workLimit)
        if let (changedA, changedB) = search.run() {
            for i in changedA { oldChanged[index1[i]] = true }
            for i in changedB { newChanged[index2[i]] = true }
        } else {
            for i in head ..< end1 { oldChanged[i] = true }
            for i in head ..< end2 { newChanged[i] = true }
        }

        BlockSlider.compact(&oldChanged, other: newChanged, classes: classes.old, lines: old)
        BlockSlider.compact(&newChanged, other: oldChanged, classes: classes.new, lines: new)
    }

    /// The lines of `range` kept for the search, in order: those whose content occurs in the other file,
    /// except frequent ones (at least ~√n occurrences there) sitting in a run dominated by
    /// lines without a counterpart.
    private static func keptLines(_ classes: [Int], _ range: Range<Int>, otherCounts: [Int], totalLines: Int) -> [Int] {
        let limit = min(roughSquareRoot(totalLines), 1024)
        // 0: no counterpart, 1: keep, 2: frequent, look at the neighbourhood.
        var kind = [UInt8](repeating: 0, count: totalLines)
        for i in range {
            let seen = otherCounts[classes[i]]
            kind[i] = seen == 0 ? 0 : (seen >= limit ? 2 : 1)
        }
        return range.filter { kind[$0] == 1 || (kind[$0] == 2 && !frequentLineIsNoise(kind, $0, range)) }
    }

    /// Whether frequent line `i` sits in a run (up to 100 lines either way) of unmatched and
    /// frequent lines in which frequent lines are less than a quarter.
    private static func frequentLineIsNoise(_ kind: [UInt8], _ i: Int, _ range: Range<Int>) -> Bool {
        let window = 100
        let low = max(range.lowerBound, i - window), high = min(range.upperBound - 1, i + window)
        var unmatchedBefore = 0, frequentBefore = 1
        var j = i - 1
        while j >= low, kind[j] != 1 {
            if kind[j] == 0 { unmatchedBefore += 1 } else { frequentBefore += 1 }
            j -= 1
        }
        if unmatchedBefore == 0 { return false }
        var unmatchedAfter = 0, frequentAfter = 1
        j = i + 1
        while j <= high, kind[j] != 1 {
            if kind[j] == 0 { unmatchedAfter += 1 } else { frequentAfter += 1 }
            j += 1
        }
        if unmatchedAfter == 0 { return false }
        let unmatched = unmatchedBefore + unmatchedAfter, frequent = frequentBefore + frequentAfter
        return frequent * 4 < frequent + unmatched
    }

    /// git's shift-based square-root estimate (a power of two near √n).
    static func roughSquareRoot(_ n: Int) -> Int {
        var result = 1, rest = n
        while rest > 0 { result <<= 1; rest >>= 2 }
        return result
    }
}

/// Numbers the distinct lines of two files (equal contents, equal number) and counts how often
/// each occurs in each file.
struct LineClasses {
    var old: [Int] = []
    var new: [Int] = []
    var oldCounts: [Int] = []
    var newCounts: [Int] = []

    init(old oldLines: LineSplit, new newLines: LineSplit) {
        var ids: [ArraySlice<UInt8>: Int] = [:]
        func classify(_ lines: LineSplit) -> [Int] {
            (0 ..< lines.count).map { i in
                let line = lines.line(i)
                if let id = ids[line] { return id }
                ids[line] = ids.count
                return ids.count - 1
            }
        }
        old = classify(oldLines)
        new = classify(newLines)
        oldCounts = Array(repeating: 0, count: ids.count)
        newCounts = Array(repeating: 0, count: ids.count)
        for id in old { oldCounts[id] += 1 }
        for id in new { newCounts[id] += 1 }
    }
}

/// Myers' O(ND) search as git runs it: find a middle snake by extending forward and backward
/// paths, split there and solve both halves. Past a cost of about √N (at least 256) it stops at
/// the furthest-reaching or a promising diagonal instead of the true middle, as git does.
final class MyersSearch {
    private let a: [Int], b: [Int]
    private var changedA: [Int] = [], changedB: [Int] = []
    /// Furthest reach per diagonal, forward and backward; index `d + offset`.
    private var forward: [Int], backward: [Int]
    private let offset: Int
    private let maxCost: Int
    private var budget: Int

    private let snakeLength = 20      // a "good" run of matches (XDL_SNAKE_CNT)
    private let heuristicCost = 256   // cost from which good runs are taken (XDL_HEUR_MIN_COST)
    private let heuristicFactor = 4   // XDL_K_HEUR

    init(a: [Int], b: [Int], budget: Int) {
        self.a = a
        self.b = b
        let diagonals = a.count + b.count + 3
        forward = Array(repeating: 0, count: diagonals)
        backward = Array(repeating: 0, count: diagonals)
        offset = b.count + 1
        maxCost = max(LineDiff.roughSquareRoot(diagonals), 256)
        self.budget = budget
    }

    /// The changed positions of `a` and `b`, or `nil` when the work budget ran out.
    func run() -> ([Int], [Int])? {
        var boxes = [(off1: 0, lim1: a.count, off2: 0, lim2: b.count, minimal: false)]
        while var box = boxes.popLast() {
            while box.off1 < box.lim1 && box.off2 < box.lim2 && a[box.off1] == b[box.off2] {
                box.off1 += 1; box.off2 += 1
            }
            while box.off1 < box.lim1 && box.off2 < box.lim2 && a[box.lim1 - 1] == b[box.lim2 - 1] {
                box.lim1 -= 1; box.lim2 -= 1
            }
            if box.off1 == box.lim1 {
                changedB += box.off2 ..< box.lim2
            } else if box.off2 == box.lim2 {
                changedA += box.off1 ..< box.lim1
            } else {
                guard let cut = split(box.off1, box.lim1, box.off2, box.lim2, minimal: box.minimal) else { return nil }
                boxes.append((cut.i1, box.lim1, cut.i2, box.lim2, cut.minimalHigh))
                boxes.append((box.off1, cut.i1, box.off2, cut.i2, cut.minimalLow))
            }
        }
        return (changedA, changedB)
    }

    private struct Cut { var i1: Int, i2: Int, minimalLow: Bool, minimalHigh: Bool }

    private func fwd(_ d: Int) -> Int { forward[d + offset] }
    private func bwd(_ d: Int) -> Int { backward[d + offset] }

    /// Where to cut the box `a[off1..<lim1]` × `b[off2..<lim2]` (which starts and ends with a
    /// mismatch), and whether each half must be solved without heuristics.
    private func split(_ off1: Int, _ lim1: Int, _ off2: Int, _ lim2: Int, minimal: Bool) -> Cut? {
        let dmin = off1 - lim2, dmax = lim1 - off2
        let fmid = off1 - off2, bmid = lim1 - lim2
        let odd = (fmid - bmid) & 1 != 0
        var fmin = fmid, fmax = fmid, bmin = bmid, bmax = bmid
        forward[fmid + offset] = off1
        backward[bmid + offset] = lim1

        var cost = 1
        while true {
            var goodSnake = false

            // Forward paths: widen the diagonal range by one (or narrow it at the box edge).
            if fmin > dmin { fmin -= 1; forward[fmin - 1 + offset] = -1 } else { fmin += 1 }
            if fmax < dmax { fmax += 1; forward[fmax + 1 + offset] = -1 } else { fmax -= 1 }
            var d = fmax
            while d >= fmin {
                var i1 = fwd(d - 1) >= fwd(d + 1) ? fwd(d - 1) + 1 : fwd(d + 1)
                let start = i1
                var i2 = i1 - d
                while i1 < lim1 && i2 < lim2 && a[i1] == b[i2] { i1 += 1; i2 += 1 }
                budget -= 1 + i1 - start
                if i1 - start > snakeLength { goodSnake = true }
                forward[d + offset] = i1
                if odd && bmin <= d && d <= bmax && bwd(d) <= i1 {
                    return Cut(i1: i1, i2: i2, minimalLow: true, minimalHigh: true)
                }
                d -= 2
            }

            // Backward paths, likewise.
            if bmin > dmin { bmin -= 1; backward[bmin - 1 + offset] = Int.max } else { bmin += 1 }
            if bmax < dmax { bmax += 1; backward[bmax + 1 + offset] = Int.max } else { bmax -= 1 }
            d = bmax
            while d >= bmin {
                var i1 = bwd(d - 1) < bwd(d + 1) ? bwd(d - 1) : bwd(d + 1) - 1
                let start = i1
                var i2 = i1 - d
                while i1 > off1 && i2 > off2 && a[i1 - 1] == b[i2 - 1] { i1 -= 1; i2 -= 1 }
                budget -= 1 + start - i1
                if start - i1 > snakeLength { goodSnake = true }
                backward[d + offset] = i1
                if !odd && fmin <= d && d <= fmax && i1 <= fwd(d) {
                    return Cut(i1: i1, i2: i2, minimalLow: true, minimalHigh: true)
                }
                d -= 2
            }

            if budget < 0 { return nil }
            if minimal { cost += 1; continue }

            // Expensive so far: take a diagonal that went far while ending in a good run.
            if goodSnake && cost > heuristicCost {
                if let cut = promisingForward(off1, lim1, off2, lim2, fmin, fmax, fmid, cost) { return cut }
                if let cut = promisingBackward(off1, lim1, off2, lim2, bmin, bmax, bmid, cost) { return cut }
            }

            // Too expensive: cut at the furthest-reaching path of either direction.
            if cost >= maxCost {
                var fbest = -1, fbest1 = -1
                d = fmax
                while d >= fmin {
                    var i1 = min(fwd(d), lim1), i2 = i1 - d
                    if lim2 < i2 { i1 = lim2 + d; i2 = lim2 }
                    if fbest < i1 + i2 { fbest = i1 + i2; fbest1 = i1 }
                    d -= 2
                }
                var bbest = Int.max, bbest1 = Int.max
                d = bmax
                while d >= bmin {
                    var i1 = max(off1, bwd(d)), i2 = i1 - d
                    if i2 < off2 { i1 = off2 + d; i2 = off2 }
                    if i1 + i2 < bbest { bbest = i1 + i2; bbest1 = i1 }
                    d -= 2
                }
                if (lim1 + lim2) - bbest < fbest - (off1 + off2) {
                    return Cut(i1: fbest1, i2: fbest - fbest1, minimalLow: true, minimalHigh: false)
                }
                return Cut(i1: bbest1, i2: bbest - bbest1, minimalLow: false, minimalHigh: true)
            }
            cost += 1
        }
    }

    /// The forward diagonal that advanced furthest (less its distance from the middle diagonal),
    /// if that beats 4 × cost and it ends after a run of at least 20 matches.
    private func promisingForward(_ off1: Int, _ lim1: Int, _ off2: Int, _ lim2: Int,
                                  _ fmin: Int, _ fmax: Int, _ fmid: Int, _ cost: Int) -> Cut? {
        var best = 0
        var cut: Cut?
        var d = fmax
        while d >= fmin {
            let i1 = fwd(d), i2 = i1 - d
            let value = (i1 - off1) + (i2 - off2) - abs(d - fmid)
            if value > heuristicFactor * cost && value > best
                && off1 + snakeLength <= i1 && i1 < lim1 && off2 + snakeLength <= i2 && i2 < lim2 {
                var k = 1
                while a[i1 - k] == b[i2 - k] {
                    if k == snakeLength {
                        best = value
                        cut = Cut(i1: i1, i2: i2, minimalLow: true, minimalHigh: false)
                        break
                    }
                    k += 1
                }
            }
            d -= 2
        }
        return cut
    }

    /// The backward counterpart of ``promisingForward``.
    private func promisingBackward(_ off1: Int, _ lim1: Int, _ off2: Int, _ lim2: Int,
                                   _ bmin: Int, _ bmax: Int, _ bmid: Int, _ cost: Int) -> Cut? {
        var best = 0
        var cut: Cut?
        var d = bmax
        while d >= bmin {
            let i1 = bwd(d), i2 = i1 - d
            let value = (lim1 - i1) + (lim2 - i2) - abs(d - bmid)
            if value > heuristicFactor * cost && value > best
                && off1 < i1 && i1 <= lim1 - snakeLength && off2 < i2 && i2 <= lim2 - snakeLength {
                var k = 0
                while a[i1 + k] == b[i2 + k] {
                    if k == snakeLength - 1 {
                        best = value
                        cut = Cut(i1: i1, i2: i2, minimalLow: false, minimalHigh: true)
                        break
                    }
                    k += 1
                }
            }
            d -= 2
        }
        return cut
    }
}

// MARK: - Sliding changed blocks

/// Moves each block of changed lines up or down where equal lines allow it, as git's
/// `xdl_change_compact` does: merge blocks that touch, line blocks up with a change in the other
/// file where possible, otherwise place them where the indent heuristic scores best.
struct BlockSlider {
    private var flags: ChangeFlags
    private let other: ChangeFlags
    private let classes: [Int]
    private let lines: LineSplit

    /// A run of changed lines `start ..< end` (possibly empty) between two unchanged lines.
    private struct Group { var start = 0, end = 0 }

    /// Slides the blocks of `flags`; `other` (the other file's marks) only tracks alignment.
    static func compact(_ flags: inout ChangeFlags, other: ChangeFlags, classes: [Int], lines: LineSplit) {
        var slider = BlockSlider(flags: flags, other: other, classes: classes, lines: lines)
        slider.run()
        flags = slider.flags
    }

    private mutating func run() {
        var g = Group(), go = Group()
        while flags[g.end] { g.end += 1 }
        while other[go.end] { go.end += 1 }

        while true {
            if g.end != g.start {
                var groupSize = 0, earliestEnd = 0, endMatchingOther = -1
                repeat {
                    groupSize = g.end - g.start
                    endMatchingOther = -1
                    while slideUp(&g) { _ = previous(&go, in: other) }
                    earliestEnd = g.end
                    if go.end > go.start { endMatchingOther = g.end }
                    while slideDown(&g) {
                        _ = next(&go, in: other)
                        if go.end > go.start { endMatchingOther = g.end }
                    }
                } while groupSize != g.end - g.start

                if g.end == earliestEnd {
                    // Cannot move.
                } else if endMatchingOther != -1 {
                    while go.end == go.start {
                        _ = slideUp(&g)
                        _ = previous(&go, in: other)
                    }
                } else {
                    let target = bestShift(g, size: groupSize, earliestEnd: earliestEnd)
                    while g.end > target {
                        _ = slideUp(&g)
                        _ = previous(&go, in: other)
                    }
                }
            }
            if !next(&g, in: flags) { break }
            _ = next(&go, in: other)
        }
    }

    private func next(_ g: inout Group, in marks: ChangeFlags) -> Bool {
        if g.end == marks.count { return false }
        g.start = g.end + 1
        g.end = g.start
        while marks[g.end] { g.end += 1 }
        return true
    }

    private func previous(_ g: inout Group, in marks: ChangeFlags) -> Bool {
        if g.start == 0 { return false }
        g.end = g.start - 1
        g.start = g.end
        while marks[g.start - 1] { g.start -= 1 }
        return true
    }

    private mutating func slideDown(_ g: inout Group) -> Bool {
        guard g.end < flags.count, classes[g.start] == classes[g.end] else { return false }
        flags[g.start] = false
        g.start += 1
        flags[g.end] = true
        g.end += 1
        while flags[g.end] { g.end += 1 }
        return true
    }

    private mutating func slideUp(_ g: inout Group) -> Bool {
        guard g.start > 0, classes[g.start - 1] == classes[g.end - 1] else { return false }
        g.start -= 1
        flags[g.start] = true
        g.end -= 1
        flags[g.end] = false
        while flags[g.start - 1] { g.start -= 1 }
        return true
    }

    /// The end position (at most 100 lines up from the lowest) with the best indent score.
    private func bestShift(_ g: Group, size: Int, earliestEnd: Int) -> Int {
        var shift = max(earliestEnd, g.end - size - 1, g.end - 100)
        var best: SplitScore?
        var bestShift = g.end
        while shift <= g.end {
            var score = SplitScore()
            score.add(SplitMeasure(lines, at: shift))
            score.add(SplitMeasure(lines, at: shift - size))
            if best == nil || score.compare(best!) <= 0 {
                best = score
                bestShift = shift
            }
            shift += 1
        }
        return bestShift
    }
}

/// What surrounds a split between line `at - 1` and line `at`: indentation and blank lines.
struct SplitMeasure {
    var endOfFile = false
    var indent = -1       // of the line after the split, -1 if blank
    var preBlank = 0      // blank lines just above
    var preIndent = -1    // of the nearest non-blank line above, -1 if none
    var postBlank = 0     // blank lines after the line following the split
    var postIndent = -1   // of the nearest non-blank line after that, -1 if none

    private static let maxBlanks = 20

    init(_ lines: LineSplit, at split: Int) {
        if split >= lines.count {
            endOfFile = true
        } else {
            indent = Self.indent(of: lines.line(split))
        }
        var i = split - 1
        while i >= 0 {
            preIndent = Self.indent(of: lines.line(i))
            if preIndent != -1 { break }
            preBlank += 1
            if preBlank == Self.maxBlanks { preIndent = 0; break }
            i -= 1
        }
        i = split + 1
        while i < lines.count {
            postIndent = Self.indent(of: lines.line(i))
            if postIndent != -1 { break }
            postBlank += 1
            if postBlank == Self.maxBlanks { postIndent = 0; break }
            i += 1
        }
    }

    /// Leading width (tab stops of 8, at most 200), or -1 for a line of only whitespace.
    static func indent(of line: ArraySlice<UInt8>) -> Int {
        var width = 0
        for byte in line {
            switch byte {
            case 0x20: width += 1
            case 0x09: width += 8 - width % 8
            case 0x0A, 0x0D: break
            default: return width
            }
            if width >= 200 { return 200 }
        }
        return -1
    }
}

/// The indent heuristic's score for a placement of a block: lower is better.
struct SplitScore {
    var effectiveIndent = 0
    var penalty = 0

    mutating func add(_ m: SplitMeasure) {
        if m.preIndent == -1 && m.preBlank == 0 { penalty += 1 }   // start of file
        if m.endOfFile { penalty += 21 }
        let postBlank = m.indent == -1 ? 1 + m.postBlank : 0
        let totalBlank = m.preBlank + postBlank
        penalty += -30 * totalBlank + 6 * postBlank
        let indent = m.indent != -1 ? m.indent : m.postIndent
        let anyBlanks = totalBlank != 0
        effectiveIndent += indent
        if indent == -1 || m.preIndent == -1 {
            // No adjustment.
        } else if indent > m.preIndent {
            penalty += anyBlanks ? 10 : -4
        } else if indent == m.preIndent {
            // No adjustment.
        } else if m.postIndent != -1 && m.postIndent > indent {
            penalty += anyBlanks ? 17 : 24   // probably the start of a new block
        } else {
            penalty += anyBlanks ? 17 : 23   // probably the end of a block
        }
    }

    /// Negative when `self` is better than `other`.
    func compare(_ other: SplitScore) -> Int {
        let indentOrder = (effectiveIndent > other.effectiveIndent ? 1 : 0) - (effectiveIndent < other.effectiveIndent ? 1 : 0)
        return 60 * indentOrder + (penalty - other.penalty)
    }
}

// MARK: - Hunks

/// Turns the changed-line marks into `@@` hunks with 3 lines of context, merging changes less
/// than 7 lines apart, with git's default function-name text after the header.
enum UnifiedHunks {
    static let context = 3

    /// One change: `oldCount` lines at `oldStart` replaced by `newCount` lines at `newStart`.
    struct Change { var oldStart: Int, oldCount: Int, newStart: Int, newCount: Int }

    static func render(old: LineSplit, new: LineSplit) -> [UInt8] {
        let diff = LineDiff(old: old, new: new)
        let changes = script(diff.oldChanged, diff.newChanged)
        var out: [UInt8] = []
        var functionFloor = -1
        var function: ArraySlice<UInt8> = []
        var first = 0
        while first < changes.count {
            var last = first
            while last + 1 < changes.count
                    && changes[last + 1].oldStart - (changes[last].oldStart + changes[last].oldCount) <= 2 * context {
                last += 1
            }
            let head = changes[first], tail = changes[last]
            let s1 = max(head.oldStart - context, 0), s2 = max(head.newStart - context, 0)
            let after = min(context, old.count - (tail.oldStart + tail.oldCount), new.count - (tail.newStart + tail.newCount))
            let e1 = tail.oldStart + tail.oldCount + after, e2 = tail.newStart + tail.newCount + after

            // The nearest line at or above the hunk's start that looks like a definition.
            var l = s1 - 1
            while l > functionFloor {
                if let name = functionName(old.line(l)) { function = name; break }
                l -= 1
            }
            functionFloor = s1 - 1
            out += header(s1, e1 - s1, s2, e2 - s2, function)

            var p1 = s1, p2 = s2
            for change in changes[first ... last] {
                while p1 < change.oldStart && p2 < change.newStart {
                    emit(new.line(p2), 0x20, &out); p1 += 1; p2 += 1
                }
                for i in change.oldStart ..< change.oldStart + change.oldCount { emit(old.line(i), 0x2D, &out) }
                for i in change.newStart ..< change.newStart + change.newCount { emit(new.line(i), 0x2B, &out) }
                p1 = change.oldStart + change.oldCount
                p2 = change.newStart + change.newCount
            }
            while p2 < e2 { emit(new.line(p2), 0x20, &out); p2 += 1 }
            first = last + 1
        }
        return out
    }

    /// The changes in file order; unchanged lines pair up one to one between the files.
    static func script(_ oldChanged: ChangeFlags, _ newChanged: ChangeFlags) -> [Change] {
        var changes: [Change] = []
        var i1 = 0, i2 = 0
        while i1 < oldChanged.count || i2 < newChanged.count {
            if oldChanged[i1] || newChanged[i2] {
                let start1 = i1, start2 = i2
                while oldChanged[i1] { i1 += 1 }
                while newChanged[i2] { i2 += 1 }
                changes.append(Change(oldStart: start1, oldCount: i1 - start1, newStart: start2, newCount: i2 - start2))
            } else {
                i1 += 1
                i2 += 1
            }
        }
        return changes
    }

    /// `@@ -s,c +s,c @@ name`: 1-based starts (0 for an empty side), counts of 1 left out.
    private static func header(_ s1: Int, _ c1: Int, _ s2: Int, _ c2: Int, _ function: ArraySlice<UInt8>) -> [UInt8] {
        func range(_ start: Int, _ count: Int) -> String {
            let first = count == 0 ? start : start + 1
            return count == 1 ? "\(first)" : "\(first),\(count)"
        }
        var line = Array("@@ -\(range(s1, c1)) +\(range(s2, c2)) @@".utf8)
        if !function.isEmpty { line += [0x20] + function }
        line.append(0x0A)
        return line
    }

    /// git's default function-name rule: a line starting with an ASCII letter, `_` or `$`,
    /// cut to 80 bytes, trailing whitespace removed.
    static func functionName(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard let first = line.first,
              (0x41 ... 0x5A).contains(first) || (0x61 ... 0x7A).contains(first) || first == 0x5F || first == 0x24
        else { return nil }
        var name = line.prefix(80)
        while let last = name.last, last == 0x20 || last == 0x09 || last == 0x0A || last == 0x0D { name = name.dropLast() }
        return name
    }

    /// One hunk line; a line without `\n` gets git's marker after it.
    private static func emit(_ line: ArraySlice<UInt8>, _ prefix: UInt8, _ out: inout [UInt8]) {
        out.append(prefix)
        out += line
        if line.last != 0x0A {
            out += Array("\n\\ No newline at end of file\n".utf8)
        }
    }
}
