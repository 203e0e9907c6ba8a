import Foundation

/// Why an agent does not get a source's newest revision yet.
public struct RolloutHold: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        /// A deploy freeze covers the agent.
        case freeze
        /// The agent's wave has not started.
        case wave
        /// The rollout halted on a failure in an earlier wave (or this one, rolled back).
        case halted
    }
    public var kind: Kind
    public var reason: String
    /// When it ends, if known (a freeze's end).
    public var until: Date?
}

/// What Flux on one agent says about one revision of one source.
public enum RevisionHealth: String, Sendable, Codable {
    /// Every object that applied it is Ready.
    case healthy
    /// An object failed to apply it, or is not Ready with it.
    case failed
    /// Applied by some objects, not Ready yet; or nothing reported for it yet.
    case progressing
    case unknown

    /// Judged from the agent's Flux objects of the source: its consumers (Kustomizations and
    /// HelmReleases) when it has any, all of them otherwise. Healthy only when every one has
    /// applied the revision and is Ready.
    static func of(_ revision: String, objects all: [FluxObjectState]) -> (RevisionHealth, String) {
        let consumers = all.filter { $0.kind == "Kustomization" || $0.kind == "HelmRelease" }
        let objects = consumers.isEmpty ? all : consumers
        let failing = objects.first { object in
            (object.state == "failing" || object.state == "failed")
                && (object.revisionAttempted == revision || (object.revisionAttempted.isEmpty && object.revisionApplied == revision))
        }
        if let failing { return (.failed, "\(failing.kind) \(failing.namespace)/\(failing.name): \(failing.message)") }
        let applied = objects.filter { $0.revisionApplied == revision }
        if !applied.isEmpty, applied.count == objects.count, applied.allSatisfy({ $0.state == "ready" }) { return (.healthy, "") }
        if !applied.isEmpty { return (.progressing, "") }
        return (.unknown, "")
    }
}

/// One pass of a governed source's rollout: from what the relay knows now (inputs) to what
/// each agent is given and how far the rollout got. Pure: the controller reads and writes.
///
/// Rules:
/// - A newer revision starts a new rollout at wave 1 (superseding a halted or unfinished one).
/// - Agents of waves up to the current one get it, unless a freeze covers them (then they keep
///   what they were last given) and no operator released it to them.
/// - The next wave starts once every agent of the current wave is healthy with it and the
///   wave's soak has passed since; a wave with no agents passes at once.
/// - A failure in a wave halts the rollout: later waves keep what they had; with
///   `rollbackOnFailure` the failed wave gets the last revision that was healthy everywhere.
public struct RolloutPlanner: Sendable {
    public struct Inputs: Sendable {
        public var latest: PackagedArtifact
        public var record: RolloutRecord?
        /// nil: one wave of every agent.
        public var policy: RolloutPolicy?
        public var agents: [String]
        public var objects: [FluxObjectState]
        /// Agent → digest it was last given.
        public var assigned: [String: String]
        /// Agent → digest of its newest delivery.
        public var delivered: [String: String]
        /// Agents a freeze covers now: why and until when.
        public var frozen: [String: RolloutHold]
        /// Agents an operator released the newest revision to.
        public var released: Set<String>
        public var now: Date
    }

    public struct Plan: Sendable, Equatable {
        public var record: RolloutRecord
        /// Agent → digest it is given (absent: nothing of this source yet).
        public var given: [String: String]
        public var holds: [String: RolloutHold]
        /// The agent whose failure halted the rollout in this pass.
        public var newlyHalted: String?
        /// Each agent's wave (0-based), matched once per pass.
        public var waves: [String: Int] = [:]
    }

    public static func plan(_ inputs: Inputs) -> Plan {
        let latest = inputs.latest
        let waves = inputs.policy?.waves ?? [RolloutPolicy.Wave(agents: ["*"], soak: .zero)]
        // Glob matching is the costly part of a pass over many agents: once per agent.
        var waveOf: [String: Int] = [:]
        waveOf.reserveCapacity(inputs.agents.count)
        for agent in inputs.agents { waveOf[agent] = inputs.policy?.wave(of: agent) ?? 0 }
        func wave(of agent: String) -> Int { waveOf[agent] ?? inputs.policy?.wave(of: agent) ?? 0 }
        var record = startOrContinue(inputs)
        let members = Dictionary(grouping: inputs.agents, by: wave(of:))
        var objectsByAgent: [String: [FluxObjectState]] = [:]
        for object in inputs.objects { objectsByAgent[object.agent, default: []].append(object) }
        func health(_ agent: String) -> (RevisionHealth, String) { RevisionHealth.of(latest.revision, objects: objectsByAgent[agent] ?? []) }

        var newlyHalted: String?
        if record.state == .rolling {
            // A failure among agents that were given the revision halts it.
            if let failed = inputs.agents.first(where: { wave(of: $0) <= record.wave && inputs.assigned[$0] == latest.digest && health($0).0 == .failed }) {
                record.state = .halted
                record.failedAgent = failed
                record.message = health(failed).1
                record.updatedAt = inputs.now
                newlyHalted = failed
            } else {
                // Advance through healthy waves (several in one pass when empty or without soak).
                while record.state == .rolling {
                    let current = members[record.wave] ?? []
                    let healthy = current.allSatisfy { inputs.assigned[$0] == latest.digest && health($0).0 == .healthy }
                    guard healthy else {
                        if record.waveHealthyAt != nil { record.waveHealthyAt = nil; record.updatedAt = inputs.now }
                        break
                    }
                    let since = record.waveHealthyAt ?? inputs.now
                    if record.waveHealthyAt == nil { record.waveHealthyAt = since; record.updatedAt = inputs.now }
                    let soak = current.isEmpty ? Duration.zero : waves[record.wave].soak
                    guard inputs.now.timeIntervalSince(since) >= soak.seconds else { break }
                    record.wave += 1
                    record.waveHealthyAt = nil
                    record.updatedAt = inputs.now
                    if record.wave >= waves.count {
                        record.state = .complete
                        record.stableDigest = latest.digest
                    }
                }
            }
        }

        var given: [String: String] = [:]
        var holds: [String: RolloutHold] = [:]
        let failedWave = record.state == .halted ? wave(of: record.failedAgent) : nil
        for agent in inputs.agents {
            let kept = inputs.assigned[agent] ?? inputs.delivered[agent]
            func hold(_ reason: RolloutHold) {
                holds[agent] = reason
                if let kept { given[agent] = kept }
            }
            let agentWave = wave(of: agent)
            if let freeze = inputs.frozen[agent], !inputs.released.contains(agent), kept != latest.digest {
                hold(freeze)
            } else if let failedWave {
                if agentWave < failedWave {
                    given[agent] = latest.digest
                } else if agentWave == failedWave {
                    if inputs.policy?.rollbackOnFailure == true, !record.stableDigest.isEmpty, record.stableDigest != latest.digest {
                        holds[agent] = RolloutHold(kind: .halted, reason: "rolled back: \(record.failedAgent) failed with \(latest.revision): \(record.message)")
                        given[agent] = record.stableDigest
                    } else {
                        given[agent] = latest.digest
                    }
                } else {
                    hold(RolloutHold(kind: .halted, reason: "rollout halted: \(record.failedAgent) (wave \(failedWave + 1)) failed: \(record.message)"))
                }
            } else if record.state == .complete || agentWave <= record.wave {
                given[agent] = latest.digest
            } else {
                hold(RolloutHold(kind: .wave, reason: "waiting for wave \(agentWave + 1) (wave \(record.wave + 1) of \(waves.count) is rolling out)"))
            }
        }
        return Plan(record: record, given: given, holds: holds, newlyHalted: newlyHalted, waves: waveOf)
    }

    /// The record for the newest revision: kept when it is the one being rolled out, else a
    /// new rollout at wave 1 that remembers the last revision healthy everywhere.
    static func startOrContinue(_ inputs: Inputs) -> RolloutRecord {
        if let record = inputs.record, record.digest == inputs.latest.digest { return record }
        let stable = inputs.record.map { $0.state == .complete ? $0.digest : $0.stableDigest } ?? ""
        return RolloutRecord(source: inputs.latest.source, digest: inputs.latest.digest, revision: inputs.latest.revision, wave: 0,
                             waveHealthyAt: nil, state: .rolling, failedAgent: "", message: "", stableDigest: stable,
                             startedAt: inputs.now, updatedAt: inputs.now)
    }
}

extension Duration {
    /// Whole and fractional seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
