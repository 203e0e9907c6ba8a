import ArtifactMirror
import Foundation
import Synchronization

/// One status line on stderr, rewritten at most ten times a second; notable events
/// (mirror rebuilds) are always printed, on a line of their own.
final class ProgressReporter: Sendable {
    private let enabled: Bool
    private let state = Mutex<(last: ContinuousClock.Instant?, dirty: Bool)>((nil, false))

    init(enabled: Bool) {
        self.enabled = enabled
    }

    func report(_ event: PackEvent) {
        switch event {
        case .rebuildingMirror(let reason):
            write("\rnote: rebuilding mirror: \(reason)\u{1B}[K\n")
        case .fetching(let p):
            guard throttle() else { return }
            let objects = p.totalObjects > 0 ? "\(p.receivedObjects)/\(p.totalObjects) objects" : "\(p.receivedObjects) objects"
            let deltas = p.totalDeltas > 0 ? ", deltas \(p.indexedDeltas)/\(p.totalDeltas)" : ""
            status("fetching: \(objects), \(Self.megabytes(p.receivedBytes))\(deltas)")
        case .packing(let files, let bytes):
            guard throttle() else { return }
            status("packing: \(files) files, \(Self.megabytes(Int(bytes)))")
        }
    }

    func done() {
        let dirty = state.withLock { s in defer { s.dirty = false }; return s.dirty }
        if dirty { write("\r\u{1B}[K") }
    }

    private func status(_ line: String) {
        state.withLock { $0.dirty = true }
        write("\r\(line)\u{1B}[K")
    }

    private func throttle() -> Bool {
        guard enabled else { return false }
        let now = ContinuousClock.now
        return state.withLock { s in
            if let last = s.last, now - last < .milliseconds(100) { return false }
            s.last = now
            return true
        }
    }

    private func write(_ text: String) {
        guard enabled || text.hasPrefix("\rnote") else { return }
        FileHandle.standardError.write(Data(text.utf8))
    }

    private static func megabytes(_ bytes: Int) -> String {
        String(format: "%.1f MB", Double(bytes) / 1_000_000)
    }
}
