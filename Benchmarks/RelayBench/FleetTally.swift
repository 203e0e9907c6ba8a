// relay-bench fleet: what the whole simulated fleet has seen, in one place (one lock).

import Foundation
import Synchronization

/// Why a session ended.
enum SessionEnd: String, Codable, Sendable, CaseIterable {
    /// The relay sent Drain.
    case drain
    /// The Connect call was refused with `grpc-retry-pushback-ms`.
    case refused
    /// Nothing heard from the relay for two heartbeat intervals.
    case watchdog
    /// The relay ended the Connect stream without a Drain.
    case closed
    /// Anything else: connection refused or reset, TLS, a status without pushback.
    case error
}

/// Cumulative counters (the progress line and the report carry them).
struct FleetCounters: Codable, Sendable {
    var sessionsStarted = 0
    var welcomes = 0
    /// Sessions ended, by reason (welcomed or not).
    var disconnects: [String: Int] = Dictionary(uniqueKeysWithValues: SessionEnd.allCases.map { ($0.rawValue, 0) })
    /// Sessions that ended before a Welcome.
    var failedBeforeWelcome = 0
    var refusals = 0
    var desiredStates = 0
    var fetchesOk = 0
    var fetchesFailed = 0
    var fetchesRefused = 0
    var acksSent = 0
    /// Status entries the relay acknowledged (StatusAck), over all agents (`status N`).
    var statusAcked = 0
    var heartbeatsSent = 0
    var probesAnswered = 0
    /// Welcomes naming another agent than --name-format gives (a relay.yaml mismatch).
    var nameMismatches = 0
    /// Sessions that ended with `error`, by what the error said (at most `errorKinds` kinds;
    /// the rest under "other").
    var errors: [String: Int] = [:]
    static let errorKinds = 16

    func minus(_ earlier: FleetCounters) -> FleetCounters {
        var delta = self
        delta.sessionsStarted -= earlier.sessionsStarted
        delta.welcomes -= earlier.welcomes
        for (key, value) in earlier.disconnects { delta.disconnects[key, default: 0] -= value }
        delta.failedBeforeWelcome -= earlier.failedBeforeWelcome
        delta.refusals -= earlier.refusals
        delta.desiredStates -= earlier.desiredStates
        delta.fetchesOk -= earlier.fetchesOk
        delta.fetchesFailed -= earlier.fetchesFailed
        delta.fetchesRefused -= earlier.fetchesRefused
        delta.acksSent -= earlier.acksSent
        delta.statusAcked -= earlier.statusAcked
        delta.heartbeatsSent -= earlier.heartbeatsSent
        delta.probesAnswered -= earlier.probesAnswered
        delta.nameMismatches -= earlier.nameMismatches
        for (key, value) in earlier.errors { delta.errors[key, default: 0] -= value }
        delta.errors = delta.errors.filter { $0.value != 0 }
        return delta
    }
}

/// Gauges: what is true right now.
struct FleetGauges: Codable, Sendable {
    /// Agents whose loop has started (the ramp).
    var started = 0
    /// TCP connections open to the relay.
    var connected = 0
    /// Sessions running (dialling, or Connect open).
    var sessions = 0
    /// Sessions that got a Welcome and are live.
    var welcomed = 0
}

/// Everything the fleet learned about one artifact.
private struct ArtifactTally {
    var source: String
    var revision: String
    var createdUnixMs: Int64
    var fanoutMs: [Double] = []
    var fetchDoneMs: [Double] = []
}

/// The shared tallies. Agents are numbered by slot (0..<agents) for the per-epoch marks.
final class FleetTally: Sendable {
    private struct State {
        var counters = FleetCounters()
        var gauges = FleetGauges()
        var artifacts: [String: ArtifactTally] = [:]
        var artifactOrder: [String] = []
        // The epoch: since the last `mark`.
        var epoch = 0
        var markUnix = unixNow()
        var markInstant = ContinuousClock.now
        var countersAtMark = FleetCounters()
        var welcomedInEpoch: [Int]
        var welcomeTimes: [Double] = []
        /// Per slot: its latest Welcome since the mark (s), nan if none.
        var latestWelcome: [Double]
        var roundTrips = LogHistogram()
    }

    let agents: Int
    private let state: Mutex<State>

    init(agents: Int) {
        self.agents = agents
        state = Mutex(State(welcomedInEpoch: Array(repeating: -1, count: agents),
                            latestWelcome: Array(repeating: .nan, count: agents)))
    }

    private func update(_ body: (inout State) -> Void) { state.withLock { body(&$0) } }

    func agentStarted() { update { $0.gauges.started += 1 } }
    func tcpOpened() { update { $0.gauges.connected += 1 } }
    func tcpClosed() { update { $0.gauges.connected -= 1 } }
    func sessionStarted() { update { $0.counters.sessionsStarted += 1; $0.gauges.sessions += 1 } }

    func welcomed(slot: Int, nameMatches: Bool) {
        let now = ContinuousClock.now
        update { state in
            state.counters.welcomes += 1
            state.gauges.welcomed += 1
            if !nameMatches { state.counters.nameMismatches += 1 }
            let sinceMark = (now - state.markInstant).seconds
            state.latestWelcome[slot] = sinceMark
            if state.welcomedInEpoch[slot] != state.epoch {
                state.welcomedInEpoch[slot] = state.epoch
                state.welcomeTimes.append(sinceMark)
            }
        }
    }

    /// `error`: for `.error`, what the error said (kept in `FleetCounters.errors`).
    func sessionEnded(_ reason: SessionEnd, welcomed: Bool, error: String? = nil) {
        update { state in
            state.gauges.sessions -= 1
            if welcomed { state.gauges.welcomed -= 1 } else { state.counters.failedBeforeWelcome += 1 }
            state.counters.disconnects[reason.rawValue, default: 0] += 1
            if reason == .refused { state.counters.refusals += 1 }
            if let error {
                let known = state.counters.errors[error] != nil || state.counters.errors.count < FleetCounters.errorKinds
                state.counters.errors[known ? error : "other", default: 0] += 1
            }
        }
    }

    func desiredState() { update { $0.counters.desiredStates += 1 } }

    /// First arrival of `artifact` at one agent.
    func received(_ artifact: ArtifactFacts, atUnixMs now: Double) {
        update { state in
            if state.artifacts[artifact.digest] == nil {
                state.artifacts[artifact.digest] = ArtifactTally(source: artifact.source, revision: artifact.revision,
                                                                 createdUnixMs: artifact.createdUnixMs)
                state.artifactOrder.append(artifact.digest)
            }
            state.artifacts[artifact.digest]!.fanoutMs.append(now - Double(artifact.createdUnixMs))
        }
    }

    func fetched(digest: String, createdUnixMs: Int64) {
        let now = unixNow() * 1000
        update { state in
            state.counters.fetchesOk += 1
            state.artifacts[digest]?.fetchDoneMs.append(now - Double(createdUnixMs))
        }
    }

    func fetchFailed() { update { $0.counters.fetchesFailed += 1 } }
    func fetchRefused() { update { $0.counters.fetchesRefused += 1 } }
    func ackSent() { update { $0.counters.acksSent += 1 } }
    func statusAcked(_ entries: Int) { update { $0.counters.statusAcked += entries } }
    func heartbeatSent() { update { $0.counters.heartbeatsSent += 1 } }
    func probeAnswered() { update { $0.counters.probesAnswered += 1 } }
    func roundTrip(milliseconds: Double) { update { $0.roundTrips.record(milliseconds: milliseconds) } }

    /// Starts a new epoch: Welcome coverage and round trips count from now.
    func mark() {
        update { state in
            state.epoch += 1
            state.markUnix = unixNow()
            state.markInstant = ContinuousClock.now
            state.countersAtMark = state.counters
            state.welcomeTimes = []
            state.latestWelcome = Array(repeating: .nan, count: state.latestWelcome.count)
            state.roundTrips = LogHistogram()
        }
    }

    // MARK: Output

    struct Progress: Encodable {
        var type = "progress"
        var t: Double
        var agents: Int
        var fetch: Bool
        var started: Int
        var connected: Int
        var sessions: Int
        var welcomed: Int
        var counters: FleetCounters
    }

    func progress(fetch: Bool) -> Progress {
        state.withLock { state in
            Progress(t: unixNow(), agents: agents, fetch: fetch, started: state.gauges.started, connected: state.gauges.connected,
                     sessions: state.gauges.sessions, welcomed: state.gauges.welcomed, counters: state.counters)
        }
    }

    struct Epoch: Encodable {
        var number: Int
        var markUnix: Double
        var secondsSinceMark: Double
        /// Agents with a Welcome since the mark.
        var welcomed: Int
        /// Seconds after the mark by which 50/90/99/100 % of the fleet had a Welcome.
        var welcomeCoverageS: CoverageTimes
        /// The same over each agent's latest Welcome since the mark: after a restart, a
        /// session welcomed by the old (draining) relay and lost with it does not count.
        var latestWelcomeCoverageS: CoverageTimes
        var heartbeatRttMs: LatencySummary
        var sinceMark: FleetCounters
    }

    struct Artifact: Encodable {
        var digest: String
        var source: String
        var revision: String
        var createdUnixMs: Int64
        /// Agents that got it in a DesiredState.
        var received: Int
        /// DesiredState arrival (wall clock) − created_unix_ms.
        var fanoutMs: LatencySummary
        var fetchedVerified: Int
        /// Verified (wall clock) − created_unix_ms.
        var fetchDoneMs: LatencySummary
    }

    struct Report: Encodable {
        var type = "report"
        var t: Double
        var agents: Int
        var fetch: Bool
        var gauges: FleetGauges
        var counters: FleetCounters
        var epoch: Epoch
        var artifacts: [Artifact]
        var harness: ProcessCost
    }

    func report(fetch: Bool) -> Report {
        let cost = ProcessCost.now()
        return state.withLock { state in
            let times = state.welcomeTimes.sorted()
            let epoch = Epoch(number: state.epoch, markUnix: state.markUnix,
                              secondsSinceMark: (ContinuousClock.now - state.markInstant).seconds,
                              welcomed: times.count, welcomeCoverageS: CoverageTimes(sortedTimes: times, fleetSize: agents),
                              latestWelcomeCoverageS: CoverageTimes(sortedTimes: state.latestWelcome.filter { !$0.isNaN }.sorted(),
                                                                    fleetSize: agents),
                              heartbeatRttMs: state.roundTrips.summary, sinceMark: state.counters.minus(state.countersAtMark))
            let artifacts = state.artifactOrder.compactMap { digest -> Artifact? in
                guard let tally = state.artifacts[digest] else { return nil }
                return Artifact(digest: digest, source: tally.source, revision: tally.revision, createdUnixMs: tally.createdUnixMs,
                                received: tally.fanoutMs.count, fanoutMs: LatencySummary(samples: tally.fanoutMs),
                                fetchedVerified: tally.fetchDoneMs.count, fetchDoneMs: LatencySummary(samples: tally.fetchDoneMs))
            }
            return Report(t: unixNow(), agents: agents, fetch: fetch, gauges: state.gauges, counters: state.counters,
                          epoch: epoch, artifacts: artifacts, harness: cost)
        }
    }
}

/// The fields of an artifact the tallies need (so they do not hold whole messages).
struct ArtifactFacts: Sendable {
    var digest: String
    var source: String
    var revision: String
    var createdUnixMs: Int64
}

/// Writes one JSON object per line on stdout (snake_case keys); serialised.
enum JSONLines {
    private static let lock = Mutex(())

    static func emit<T: Encodable>(_ value: T) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? encoder.encode(value) else { return }
        lock.withLock { _ in
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}
