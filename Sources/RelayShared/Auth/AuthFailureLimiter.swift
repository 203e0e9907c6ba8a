import Foundation
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// Makes failed authentication cost something, per source address (an IPv4 address, or an
/// IPv6 /64): each address has a bucket of `burst` failures that refills at
/// `refillPerSecond`. While its bucket is empty, an address is refused at once — before its
/// credentials are checked, so a limited address learns nothing — until one failure's worth
/// has refilled. Successful authentication is never counted or delayed. At most
/// `maxAddresses` are tracked; beyond that the least recently seen are forgotten.
///
/// Logging is sampled: per address, the first failure in each `logInterval` is logged at
/// warning, later ones are counted and summarised when the interval ends ("N more failed
/// authentications from A"); across all addresses at most `maxLogLinesPerInterval` warnings are
/// written per interval. Every failure is counted: `<prefix>_auth_failures_total{surface}`
/// (wrong or missing-but-required credentials, and throttled attempts), and
/// `<prefix>_auth_throttled_total{surface}` for the attempts refused without a check.
public final class AuthFailureLimiter: Sendable {
    /// The defaults let an agent retrying a refused token at relay-agent's fastest backoff,
    /// or a dashboard with a stale token, go on failing for a while without locking out the
    /// other agents behind the same address; a flood is throttled after `burst` failures.
    public struct Policy: Sendable {
        public var burst: Double = 20
        public var refillPerSecond: Double = 1
        public var maxAddresses = 10_000
        public var logInterval: Duration = .seconds(60)
        public var maxLogLinesPerInterval = 100
        public init() {}
    }

    public enum Verdict: Sendable, Equatable {
        case allowed
        /// Refused; the address may try again after this many seconds.
        case throttled(retryAfterSeconds: Int)
    }

    private struct Entry {
        var tokens: Double
        var updated: ContinuousClock.Instant
        /// When the current log interval of this address began (its first failure was logged).
        var loggedAt: ContinuousClock.Instant?
        var unlogged = 0
        var unloggedThrottled = 0
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var linesInInterval = 0
        var intervalStart: ContinuousClock.Instant
        var suppressed = 0
    }

    /// What to log, decided under the lock and written after it.
    private enum Line {
        case failure(reason: String)
        case summary(count: Int, throttled: Int)
    }

    public let policy: Policy
    private let logger: Logger
    private let metricsPrefix: String
    private let state: Mutex<State>

    public init(metricsPrefix: String, logger: Logger, policy: Policy = Policy()) {
        self.metricsPrefix = metricsPrefix
        self.logger = logger
        self.policy = policy
        state = Mutex(State(intervalStart: .now))
    }

    /// Before checking credentials from `address`: whether to check them at all. A throttled
    /// attempt counts as a failure.
    public func admit(_ address: String, surface: String) -> Verdict {
        let now = ContinuousClock.now
        let (verdict, lines) = state.withLock { state -> (Verdict, [Line]) in
            guard var entry = state.entries[address] else { return (.allowed, []) }
            refill(&entry, now: now)
            guard entry.tokens < 1 else {
                state.entries[address] = entry
                return (.allowed, [])
            }
            let wait = max(1, Int(((1 - entry.tokens) / policy.refillPerSecond).rounded(.up)))
            let lines = note(&entry, throttled: true, reason: "", now: now, state: &state)
            state.entries[address] = entry
            return (.throttled(retryAfterSeconds: wait), lines)
        }
        if verdict != .allowed {
            failures(surface).increment()
            Counter(label: "\(metricsPrefix)_auth_throttled_total", dimensions: [("surface", surface)]).increment()
        }
        log(lines, address: address, surface: surface)
        return verdict
    }

    /// After credentials from `address` were checked and refused; `reason` says what to fix.
    public func recordFailure(_ address: String, surface: String, reason: String) {
        let now = ContinuousClock.now
        let lines = state.withLock { state -> [Line] in
            var entry = state.entries[address] ?? Entry(tokens: policy.burst, updated: now)
            refill(&entry, now: now)
            entry.tokens = max(0, entry.tokens - 1)
            let lines = note(&entry, throttled: false, reason: reason, now: now, state: &state)
            state.entries[address] = entry
            if state.entries.count > policy.maxAddresses { forgetOldest(&state) }
            return lines
        }
        failures(surface).increment()
        log(lines, address: address, surface: surface)
    }

    /// Writes the summaries of intervals that have ended and forgets addresses with nothing
    /// pending whose bucket is full again (`run()` calls it).
    public func flush() {
        let now = ContinuousClock.now
        var (summaries, suppressed) = state.withLock { state -> ([(String, Line)], Int) in
            var summaries: [(String, Line)] = []
            for (address, var entry) in state.entries {
                refill(&entry, now: now)
                if let loggedAt = entry.loggedAt, now - loggedAt >= policy.logInterval {
                    if entry.unlogged > 0 { summaries.append((address, .summary(count: entry.unlogged, throttled: entry.unloggedThrottled))) }
                    entry.loggedAt = nil
                    entry.unlogged = 0
                    entry.unloggedThrottled = 0
                }
                state.entries[address] = entry.loggedAt == nil && entry.tokens >= policy.burst ? nil : entry
            }
            var suppressed = 0
            if now - state.intervalStart >= policy.logInterval {
                suppressed = state.suppressed
                state.suppressed = 0
                state.linesInInterval = 0
                state.intervalStart = now
            }
            return (summaries, suppressed)
        }
        // Summaries are capped like warnings: beyond the cap they join the "other addresses" count.
        for (index, (address, line)) in summaries.enumerated() {
            guard index < policy.maxLogLinesPerInterval else {
                if case .summary(let count, _) = line { suppressed += count }
                continue
            }
            log([line], address: address, surface: nil)
        }
        if suppressed > 0 {
            logger.warning("\(suppressed) more failed authentications from other addresses in the last \(policy.logInterval) (log limit reached)")
        }
    }

    /// Addresses tracked now (bounded by `maxAddresses`).
    var trackedAddresses: Int { state.withLock { $0.entries.count } }

    // MARK: - Internals (under the lock)

    private func refill(_ entry: inout Entry, now: ContinuousClock.Instant) {
        let elapsed = now - entry.updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        entry.tokens = min(policy.burst, entry.tokens + seconds * policy.refillPerSecond)
        entry.updated = now
    }

    /// Counts a failure for logging: the first of an interval is logged (after the summary of
    /// the previous interval, if any), the rest are counted.
    private func note(_ entry: inout Entry, throttled: Bool, reason: String, now: ContinuousClock.Instant,
                      state: inout State) -> [Line] {
        if let loggedAt = entry.loggedAt, now - loggedAt < policy.logInterval {
            entry.unlogged += 1
            entry.unloggedThrottled += throttled ? 1 : 0
            return []
        }
        var lines: [Line] = []
        if entry.unlogged > 0 { lines.append(.summary(count: entry.unlogged, throttled: entry.unloggedThrottled)) }
        entry.loggedAt = now
        entry.unlogged = 0
        entry.unloggedThrottled = 0
        guard state.linesInInterval < policy.maxLogLinesPerInterval else {
            state.suppressed += 1
            return lines
        }
        state.linesInInterval += 1
        lines.append(.failure(reason: throttled ? "refused without a check: too many failures" : reason))
        return lines
    }

    /// Forgets the least recently seen quarter of the addresses.
    private func forgetOldest(_ state: inout State) {
        let oldest = state.entries.sorted { $0.value.updated < $1.value.updated }.prefix(max(1, state.entries.count / 4))
        for (address, _) in oldest { state.entries[address] = nil }
    }

    private func failures(_ surface: String) -> Counter {
        Counter(label: "\(metricsPrefix)_auth_failures_total", dimensions: [("surface", surface)])
    }

    private func log(_ lines: [Line], address: String, surface: String?) {
        for line in lines {
            var metadata: Logger.Metadata = ["address": "\(address)"]
            if let surface { metadata["surface"] = "\(surface)" }
            switch line {
            case .failure(let reason):
                logger.warning("authentication failed: \(reason); further failures from this address are summarised once a \(policy.logInterval) interval ends",
                               metadata: metadata)
            case .summary(let count, let throttled):
                logger.warning("\(count) more failed authentications from \(address) in the last \(policy.logInterval) (\(throttled) refused without a check)",
                               metadata: metadata)
            }
        }
    }
}

extension AuthFailureLimiter: Service {
    /// Writes summaries until shutdown, each soon (a sixth of `logInterval`) after its interval ends.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.policy.logInterval / 6)
                self.flush()
            }
        }
    }
}

extension AuthFailureLimiter {
    /// The limiter's key for a client address: the IPv4 address, or the IPv6 /64 (one host
    /// usually holds a whole /64); IPv4-mapped IPv6 addresses count as IPv4.
    public static func key(_ address: SocketAddress?) -> String {
        switch address {
        case .v4?: return address?.ipAddress ?? "unknown"
        case .v6?: return key(ip: address?.ipAddress ?? "")
        case .unixDomainSocket?: return "unix"
        case nil: return "unknown"
        }
    }

    /// The key for a gRPC peer string: `ipv4:127.0.0.1:5555`, `ipv6:[::1]:5555`, `unix:…`.
    public static func key(grpcPeer peer: String) -> String {
        if peer.hasPrefix("ipv4:") {
            let rest = peer.dropFirst(5)
            return String(rest[..<(rest.lastIndex(of: ":") ?? rest.endIndex)])
        }
        if peer.hasPrefix("ipv6:"), let open = peer.firstIndex(of: "["), let close = peer.firstIndex(of: "]") {
            return key(ip: String(peer[peer.index(after: open)..<close]))
        }
        return peer.hasPrefix("unix:") ? "unix" : peer
    }

    /// An IP address as text → its key (IPv6: the /64 prefix).
    static func key(ip: String) -> String {
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, ip, &v6) == 1 else { return ip.isEmpty ? "unknown" : ip }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            return bytes[12...].map(String.init).joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return groups.joined(separator: ":") + "::/64"
    }
}
