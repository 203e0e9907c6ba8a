// relay-bench fleet: the small statistics helpers (no per-sample lists for unbounded streams).

import Foundation

/// A latency histogram with logarithmic buckets (2 % wide) from 1 µs up: constant memory
/// however many samples, percentiles within 2 %.
struct LogHistogram: Sendable {
    private static let smallest = 0.001  // ms
    private static let growth = 1.02
    private static let logGrowth = log(growth)
    private var buckets: [Int: Int] = [:]
    private(set) var count = 0
    private(set) var maximum = 0.0

    mutating func record(milliseconds value: Double) {
        guard value.isFinite else { return }
        let clamped = max(value, Self.smallest)
        let index = Int(log(clamped / Self.smallest) / Self.logGrowth)
        buckets[index, default: 0] += 1
        count += 1
        maximum = max(maximum, value)
    }

    /// Nearest-rank percentile (q in 0...1): the upper edge of the bucket holding that rank,
    /// never above the largest sample.
    func percentile(_ q: Double) -> Double? {
        guard count > 0 else { return nil }
        let rank = max(1, Int((q * Double(count)).rounded(.up)))
        var seen = 0
        for index in buckets.keys.sorted() {
            seen += buckets[index]!
            if seen >= rank { return min(maximum, Self.smallest * pow(Self.growth, Double(index + 1))) }
        }
        return maximum
    }

    var summary: LatencySummary {
        LatencySummary(count: count, p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99),
                       max: count > 0 ? maximum : nil)
    }
}

/// Percentiles of a set of samples, nil while there are none.
struct LatencySummary: Codable, Sendable {
    var count: Int
    var p50: Double?
    var p90: Double?
    var p99: Double?
    var max: Double?

    /// Exact nearest-rank percentiles of `samples`.
    init(samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        p50 = Self.rank(sorted, 0.5)
        p90 = Self.rank(sorted, 0.9)
        p99 = Self.rank(sorted, 0.99)
        max = sorted.last
    }

    init(count: Int, p50: Double?, p90: Double?, p99: Double?, max: Double?) {
        self.count = count
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.max = max
    }

    static func rank(_ sorted: [Double], _ q: Double) -> Double? {
        guard !sorted.isEmpty else { return nil }
        return sorted[Swift.min(sorted.count - 1, Swift.max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
    }
}

/// The time (seconds since the mark) by which a fraction of the whole fleet had a Welcome:
/// nil while fewer agents than that fraction have one.
struct CoverageTimes: Codable, Sendable {
    var p50: Double?
    var p90: Double?
    var p99: Double?
    var p100: Double?

    init(sortedTimes: [Double], fleetSize: Int) {
        func by(_ q: Double) -> Double? {
            let needed = max(1, Int((q * Double(fleetSize)).rounded(.up)))
            return sortedTimes.count >= needed ? sortedTimes[needed - 1] : nil
        }
        p50 = by(0.5)
        p90 = by(0.9)
        p99 = by(0.99)
        p100 = by(1.0)
    }
}

/// This process's own cost: resident memory now and at peak, CPU seconds so far.
struct ProcessCost: Codable, Sendable {
    var rssBytes: Int
    var peakRssBytes: Int
    var cpuSeconds: Double

    static func now() -> ProcessCost {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        let cpu = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        return ProcessCost(rssBytes: currentRSS(), peakRssBytes: peakRSSBytes(), cpuSeconds: cpu)
    }

    private static func currentRSS() -> Int {
        #if os(Linux)
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return 0
        #else
        return peakRSSBytes()
        #endif
    }
}

func unixNow() -> Double { Date().timeIntervalSince1970 }
