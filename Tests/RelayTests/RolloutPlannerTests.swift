import Foundation
import Testing
@testable import RelayServer

/// The rollout rules as a pure function: waves, soak, halt, rollback, freezes, releases,
/// supersession. (The same rules end to end, with real agents: RolloutTests.)
@Suite struct RolloutPlannerTests {
    static let agents = ["canary-1", "canary-2", "eu-1", "eu-2", "us-1", "us-2"]
    static let policy = RolloutPolicy(waves: [.init(agents: ["canary-*"], soak: .zero), .init(agents: ["eu-*"], soak: .seconds(600)),
                                              .init(agents: ["*"], soak: .zero)], rollbackOnFailure: false)
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func artifact(_ n: Int) -> PackagedArtifact {
        PackagedArtifact(source: "app", revision: "main@sha1:\(String(repeating: String(n), count: 40))", digest: "sha256:\(n)",
                         size: 1, commit: String(repeating: String(n), count: 40), origin: "", createdAt: t0.addingTimeInterval(Double(n)))
    }

    static func object(_ agent: String, _ state: String, applied: Int?, attempted: Int? = nil, message: String = "") -> FluxObjectState {
        FluxObjectState(agent: agent, kind: "Kustomization", namespace: "flux-system", name: "app", state: state, reason: "", message: message,
                        revisionApplied: applied.map { artifact($0).revision } ?? "", revisionAttempted: attempted.map { artifact($0).revision } ?? "",
                        source: "app", lastTransitionTime: nil, updatedAt: t0)
    }

    /// Runs passes like the controller: assignments carried from one to the next.
    struct Run {
        var record: RolloutRecord?
        var assigned: [String: String] = [:]
        var policy = RolloutPlannerTests.policy
        var frozen: [String: RolloutHold] = [:]
        var released: Set<String> = []

        mutating func pass(_ latest: Int, objects: [FluxObjectState] = [], at seconds: Double = 0) -> RolloutPlanner.Plan {
            let plan = RolloutPlanner.plan(.init(
                latest: RolloutPlannerTests.artifact(latest), record: record, policy: policy, agents: RolloutPlannerTests.agents,
                objects: objects, assigned: assigned, delivered: [:], frozen: frozen, released: released,
                now: RolloutPlannerTests.t0.addingTimeInterval(seconds)))
            record = plan.record
            assigned = plan.given
            return plan
        }
    }

    static func healthy(_ agents: [String], _ n: Int) -> [FluxObjectState] { agents.map { object($0, "ready", applied: n) } }

    @Test func wavesAdvanceOnHealthAndSoak() {
        var run = Run()
        var plan = run.pass(1)
        #expect(plan.given == ["canary-1": "sha256:1", "canary-2": "sha256:1"])
        #expect(plan.holds["eu-1"]?.kind == .wave)
        // One canary healthy: still wave 1.
        plan = run.pass(1, objects: Self.healthy(["canary-1"], 1))
        #expect(plan.record.wave == 0)
        // Both: wave 2 (no soak on wave 1).
        plan = run.pass(1, objects: Self.healthy(["canary-1", "canary-2"], 1), at: 1)
        #expect(plan.record.wave == 1)
        #expect(plan.given["eu-1"] == "sha256:1" && plan.given["us-1"] == nil)
        // Wave 2 healthy at t=2: soak of 600 s runs from then.
        let allEU = Self.healthy(["canary-1", "canary-2", "eu-1", "eu-2"], 1)
        plan = run.pass(1, objects: allEU, at: 2)
        #expect(plan.record.wave == 1 && plan.record.waveHealthyAt == Self.t0.addingTimeInterval(2))
        plan = run.pass(1, objects: allEU, at: 601)
        #expect(plan.record.wave == 1, "the soak has not passed")
        plan = run.pass(1, objects: allEU, at: 602)
        #expect(plan.record.wave == 2 && plan.given["us-2"] == "sha256:1")
        plan = run.pass(1, objects: Self.healthy(Self.agents, 1), at: 603)
        #expect(plan.record.state == .complete && plan.record.stableDigest == "sha256:1")
    }

    @Test func aFailureHaltsLaterWavesAndRollbackReturnsTheFailedWave() {
        for rollback in [false, true] {
            var run = Run()
            run.policy.rollbackOnFailure = rollback
            run.policy.waves[1].soak = .zero
            _ = run.pass(1)
            _ = run.pass(1, objects: Self.healthy(["canary-1", "canary-2"], 1))
            _ = run.pass(1, objects: Self.healthy(["canary-1", "canary-2", "eu-1", "eu-2"], 1))
            #expect(run.pass(1, objects: Self.healthy(Self.agents, 1)).record.state == .complete)
            // Revision 2: canaries fine, eu-1 fails.
            _ = run.pass(2, objects: Self.healthy(Self.agents, 1))
            _ = run.pass(2, objects: Self.healthy(["canary-1", "canary-2"], 2) + Self.healthy(["eu-1", "eu-2", "us-1", "us-2"], 1))
            let failing = Self.healthy(["canary-1", "canary-2"], 2) + [Self.object("eu-1", "failing", applied: 1, attempted: 2, message: "0/2 replicas")]
                + Self.healthy(["eu-2", "us-1", "us-2"], 1)
            let plan = run.pass(2, objects: failing)
            #expect(plan.record.state == .halted && plan.record.failedAgent == "eu-1" && plan.newlyHalted == "eu-1")
            #expect(plan.record.message.contains("0/2 replicas"))
            #expect(plan.given["canary-1"] == "sha256:2")
            #expect(plan.given["us-1"] == "sha256:1" && plan.holds["us-1"]?.kind == .halted, "later waves keep the previous revision")
            #expect(plan.given["eu-1"] == (rollback ? "sha256:1" : "sha256:2"))
            #expect(plan.given["eu-2"] == (rollback ? "sha256:1" : "sha256:2"))
            // Halted stays halted (no second notification); a newer revision supersedes it.
            #expect(run.pass(2, objects: failing).newlyHalted == nil)
            let next = run.pass(3, objects: failing)
            #expect(next.record.state == .rolling && next.record.wave == 0 && next.record.stableDigest == "sha256:1")
            #expect(next.given["canary-1"] == "sha256:3" && next.given["us-1"] == "sha256:1")
        }
    }

    @Test func frozenAgentsKeepWhatTheyHadUntilReleasedOrTheFreezeEnds() {
        var run = Run()
        run.policy = RolloutPolicy(waves: [.init(agents: ["*"], soak: .zero)], rollbackOnFailure: false)
        #expect(run.pass(1).given.count == 6)
        let hold = RolloutHold(kind: .freeze, reason: "deploy freeze 'weekend' until Monday", until: Self.t0.addingTimeInterval(3600))
        run.frozen = ["eu-1": hold, "eu-2": hold]
        var plan = run.pass(2)
        #expect(plan.given["eu-1"] == "sha256:1" && plan.holds["eu-1"] == hold)
        #expect(plan.given["us-1"] == "sha256:2" && plan.holds["us-1"] == nil)
        run.released = ["eu-2"]
        plan = run.pass(2)
        #expect(plan.given["eu-2"] == "sha256:2" && plan.given["eu-1"] == "sha256:1")
        // A release is for one revision: the next is held again, but what eu-2 has stays.
        run.released = []
        plan = run.pass(3)
        #expect(plan.given["eu-2"] == "sha256:2" && plan.holds["eu-2"] != nil)
        run.frozen = [:]
        plan = run.pass(3)
        #expect(plan.given.values.allSatisfy { $0 == "sha256:3" } && plan.holds.isEmpty)
    }

    @Test func anAgentWithNothingYetGetsNothingWhileHeld() {
        var run = Run()
        run.frozen = ["canary-1": RolloutHold(kind: .freeze, reason: "freeze", until: nil)]
        let plan = run.pass(1)
        #expect(plan.given["canary-1"] == nil && plan.holds["canary-1"]?.kind == .freeze)
        #expect(plan.given["canary-2"] == "sha256:1")
    }

    @Test func freezeWindowsFollowGitLabsCronSemantics() throws {
        let zone = try #require(TimeZone(identifier: "America/New_York"))
        let window = FreezeWindow(start: try CronSchedule("0 23 * * FRI"), end: try CronSchedule("0 7 * * MON"), timeZone: zone)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let saturday = try #require(calendar.date(from: DateComponents(year: 2026, month: 12, day: 5, hour: 12)))
        let state = window.state(at: saturday)
        #expect(state.frozen)
        #expect(state.until == calendar.date(from: DateComponents(year: 2026, month: 12, day: 7, hour: 7)))
        let wednesday = try #require(calendar.date(from: DateComponents(year: 2026, month: 12, day: 9, hour: 12)))
        #expect(!window.state(at: wednesday).frozen)
    }
}
