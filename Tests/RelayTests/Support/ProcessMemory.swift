import Foundation

/// Resident memory of the servers tests start, read from /proc (Linux).
enum ProcessMemory {
    /// VmRSS of `pid` in MiB, or nil once it is gone.
    static func residentMiB(_ pid: Int32) -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kib / 1024
    }

    /// The server a `BackgroundProcess` runs (the only child of its supervising shell).
    static func serverPID(of process: BackgroundProcess) -> Int32? {
        let children = (try? String(contentsOfFile: "/proc/\(process.pid)/task/\(process.pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").compactMap { Int32($0) }.first { pid in
            // The supervisor's other child is its `sleep`.
            (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.hasPrefix("sleep") == false
        }
    }

    /// Samples `pid`'s RSS every 50 ms while `body` runs; returns the body's result and the peak.
    static func peakMiB<T>(_ pid: Int32, during body: () throws -> T) rethrows -> (T, Double) {
        let peak = PeakSampler(pid: pid)
        let thread = Thread { peak.run() }
        thread.start()
        defer { peak.stop() }
        let result = try body()
        return (result, peak.stop())
    }

    private final class PeakSampler: @unchecked Sendable {
        let pid: Int32
        private let lock = NSCondition()
        private var peak = 0.0
        private var running = true
        private var finished = false

        init(pid: Int32) { self.pid = pid }

        func run() {
            lock.lock()
            while running {
                peak = max(peak, ProcessMemory.residentMiB(pid) ?? 0)
                _ = lock.wait(until: Date().addingTimeInterval(0.05))
            }
            finished = true
            lock.broadcast()
            lock.unlock()
        }

        /// Ends sampling (once the sampler has taken its last sample) and returns the peak.
        @discardableResult
        func stop() -> Double {
            lock.lock()
            defer { lock.unlock() }
            running = false
            lock.broadcast()
            while !finished { _ = lock.wait(until: Date().addingTimeInterval(1)) }
            return max(peak, ProcessMemory.residentMiB(pid) ?? 0)
        }
    }
}
