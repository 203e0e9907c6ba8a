import ArtifactMirror
import Foundation
import Logging

/// The running agent's inbox (`import.inboxDir`, default `<dataDir>/inbox`), polled every
/// second: bundles dropped there (renamed into place: names starting with `.` or holding
/// `.tmp` are left alone, and a file is taken only once its size and time held still for a
/// poll) are imported, then moved to `done/` or `rejected/` with `<name>.result.json` written
/// in the inbox. A split bundle (`NAME.001`, …) waits until all its parts are there, or until
/// `partsGrace` has passed since its first part appeared (then it is refused: missing_part).
/// Requests from the CLIs (`InboxRequest`) come through a separate private directory
/// (`<dataDir>/requests`, mode 0700, owned by the agent's user): a drop box or data diode
/// writing into the inbox can deliver bundles, which are verified, but never commands.
public struct InboxWatcher: Sendable {
    let inbox: URL
    let requests: URL
    let runtime: AgentRuntime
    let logger: Logger
    let interval: Duration
    let partsGrace: TimeInterval

    public init(runtime: AgentRuntime, interval: Duration = .seconds(1), partsGrace: TimeInterval = 600) {
        inbox = runtime.config.inboxDirectory
        requests = runtime.config.requestDirectory
        self.runtime = runtime
        logger = runtime.logger
        self.interval = interval
        self.partsGrace = partsGrace
    }

    public func run() async {
        do { try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true) } catch {
            logger.error("cannot create the inbox; bundles dropped there will not be imported", metadata: ["inbox": "\(inbox.path)", "error": "\(error)"])
            return
        }
        let privateRequests = InboxRequest.preparePrivateDirectory(requests)
        if !privateRequests {
            logger.error("the request directory is not private (mode 0700, this user's); CLI requests are ignored",
                         metadata: ["directory": "\(requests.path)"])
        }
        var bundles = Tracker(acceptsRequests: false)
        var commands = Tracker(acceptsRequests: true)
        while !Task.isCancelled {
            for item in bundles.poll(inbox, now: Date()) {
                if Task.isCancelled { return }
                await handle(item, in: inbox, tracker: &bundles)
            }
            if privateRequests {
                for item in commands.poll(requests, now: Date()) {
                    if Task.isCancelled { return }
                    await handle(item, in: requests, tracker: &commands)
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// What the inbox holds that is ready.
    enum Item {
        case exportStatus(name: String)
        case importRequest(name: String)
        /// A bundle: its base name and its files (one, or its parts).
        case bundle(base: String, files: [String], firstSeen: Date)
    }

    struct Tracker {
        /// The private request directory: requests only. The inbox: bundles only.
        let acceptsRequests: Bool
        /// Size and modification time per file name at the previous poll, and when first seen.
        var seen: [String: (size: UInt64, modified: TimeInterval, first: Date)] = [:]
        /// Bundles left waiting for parts (not reported again each second).
        var waiting: Set<String> = []

        mutating func poll(_ inbox: URL, now: Date) -> [Item] {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: inbox.path)) ?? []).sorted()
            var stable: [String: Date] = [:]
            var current: [String: (UInt64, TimeInterval, Date)] = [:]
            for name in names where !name.hasPrefix(".") && !name.contains(".tmp") && !name.hasSuffix(InboxRequest.resultSuffix) {
                var info = stat()
                guard stat(inbox.appendingPathComponent(name).path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                let size = UInt64(info.st_size)
                let modified = Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
                let first = seen[name]?.first ?? now
                if let previous = seen[name], previous.size == size, previous.modified == modified { stable[name] = first }
                current[name] = (size, modified, first)
            }
            seen = current.mapValues { (size: $0.0, modified: $0.1, first: $0.2) }
            var items: [Item] = []
            var groups: [String: [String]] = [:]
            for name in stable.keys.sorted() {
                if acceptsRequests {
                    if name.hasSuffix(InboxRequest.exportStatusSuffix) {
                        items.append(.exportStatus(name: name))
                    } else if name.hasSuffix(InboxRequest.importSuffix) {
                        items.append(.importRequest(name: name))
                    }
                } else {
                    groups[Self.base(of: name), default: []].append(name)
                }
            }
            for (base, files) in groups.sorted(by: { $0.key < $1.key }) {
                // Every file of the group present is stable: a part still being written holds it back.
                let all = current.keys.filter { Self.base(of: $0) == base && !$0.hasSuffix(".json") }
                guard all.allSatisfy({ stable[$0] != nil }) else { continue }
                let first = files.compactMap { stable[$0] }.min() ?? now
                items.append(.bundle(base: base, files: files.sorted(), firstSeen: first))
            }
            return items
        }

        /// `NAME` for `NAME.001`, …; the name itself otherwise.
        static func base(of name: String) -> String {
            let suffix = name.suffix(4)
            return suffix.count == 4 && suffix.first == "." && suffix.dropFirst().allSatisfy(\.isNumber) ? String(name.dropLast(4)) : name
        }

        mutating func forget(_ names: [String]) { for name in names { seen.removeValue(forKey: name) } }
    }

    private func handle(_ item: Item, in directory: URL, tracker: inout Tracker) async {
        switch item {
        case .exportStatus(let name):
            let stem = String(name.dropLast(InboxRequest.exportStatusSuffix.count))
            let result = await offload { exportStatus(request: directory.appendingPathComponent(name)) }
            finish(stem: stem, files: [name], result: result, in: directory)
            tracker.forget([name])
        case .importRequest(let name):
            let stem = String(name.dropLast(InboxRequest.importSuffix.count))
            let result: InboxResult = await offload {
                guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path),
                      let request = try? JSONDecoder().decode(InboxRequest.Import.self, from: data) else {
                    return InboxResult(ok: false, code: "bad_request", message: "\(name) is not {\"files\": […], \"allowExpired\": bool}")
                }
                return importBundle(request.files, allowExpired: request.allowExpired ?? false)
            }
            finish(stem: stem, files: [name], result: result, in: directory)
            tracker.forget([name])
        case .bundle(let base, let files, let firstSeen):
            let paths = files.map { inbox.appendingPathComponent($0).path }
            // Parts: wait (within the grace period) until part 1 says how many there are and all are here.
            let needed = files == [base] ? 1 : BundleImporter.partsNeeded(firstPart: inbox.appendingPathComponent(base + ".001").path)
            if needed.map({ $0 > files.count }) ?? true, Date().timeIntervalSince(firstSeen) < partsGrace {
                if tracker.waiting.insert(base).inserted {
                    logger.info("bundle parts arriving; waiting for the rest", metadata: ["bundle": "\(base)", "have": "\(files.count)", "need": "\(needed.map(String.init) ?? "?")"])
                }
                return
            }
            tracker.waiting.remove(base)
            let result = await offload { importBundle([paths[0]], allowExpired: false) }
            finish(stem: base, files: files, result: result, in: inbox)
            tracker.forget(files)
        }
    }

    /// Runs blocking file work off the cooperative pool.
    private func offload<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global(qos: .utility).async { continuation.resume(returning: work()) }
        }
    }

    private func importBundle(_ files: [String], allowExpired: Bool) -> InboxResult {
        do {
            let summary = try runtime.bundleImporter().run(files, allowExpired: allowExpired)
            return InboxResult(ok: true, code: "ok", message: "bundle \(summary.sequence) imported", imported: summary)
        } catch let refusal as BundleRefusal {
            return InboxResult(ok: false, code: refusal.code, message: refusal.description)
        } catch {
            return InboxResult(ok: false, code: "io", message: "\(error)")
        }
    }

    private func exportStatus(request: URL) -> InboxResult {
        guard let data = FileManager.default.contents(atPath: request.path),
              let body = try? JSONDecoder().decode(InboxRequest.ExportStatus.self, from: data), body.output.hasPrefix("/") else {
            return InboxResult(ok: false, code: "bad_request", message: "\(request.lastPathComponent) is not {\"output\": \"<absolute path>\"}")
        }
        do {
            let summary = try runtime.statusExporter().export(output: URL(fileURLWithPath: body.output))
            return InboxResult(ok: true, code: "ok", message: "status bundle written to \(body.output)", status: summary)
        } catch {
            return InboxResult(ok: false, code: error.code, message: error.description)
        }
    }

    /// Moves what was handled to `done/` or `rejected/` and writes `<stem>.result.json`.
    private func finish(stem: String, files: [String], result: InboxResult, in inbox: URL) {
        let target = inbox.appendingPathComponent(result.ok ? "done" : "rejected")
        try? FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
        for file in files {
            let destination = target.appendingPathComponent(file).path
            unlink(destination)
            if rename(inbox.appendingPathComponent(file).path, destination) != 0 { unlink(inbox.appendingPathComponent(file).path) }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            try FileSystem.writeAtomically(try encoder.encode(result), to: inbox.appendingPathComponent(stem + InboxRequest.resultSuffix).path)
        } catch {
            logger.error("cannot write the inbox result", metadata: ["name": "\(stem)", "error": "\(error)"])
        }
        Self.keepNewest(Self.keptHandled, in: target)
        logger.notice("inbox item handled", metadata: ["name": "\(stem)", "ok": "\(result.ok)", "code": "\(result.code)"])
    }
}

extension InboxWatcher {
    /// Handled files kept in `done/` and `rejected/` (oldest go first): a drop box never fills the disk.
    static let keptHandled = 20

    static func keepNewest(_ count: Int, in directory: URL) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        guard names.count > count else { return }
        let dated = names.map { name -> (String, TimeInterval) in
            var info = stat()
            let path = directory.appendingPathComponent(name).path
            return (path, stat(path, &info) == 0 ? Double(info.st_mtim.tv_sec) : 0)
        }.sorted { $0.1 > $1.1 }
        for (path, _) in dated.dropFirst(count) { unlink(path) }
    }
}

extension BundleImporter {
    /// How many parts the bundle whose first part is `firstPart` says it has (read without
    /// trusting it: only to know how long to wait), or nil when unreadable.
    public static func partsNeeded(firstPart: String) -> Int? {
        guard fileSize(firstPart) != nil, let head = try? readHead(PartedTarReader(paths: [firstPart])),
              let statement = try? JSONDecoder().decode(BundleStatement.self, from: head.statement) else { return nil }
        return statement.parts.count
    }
}
