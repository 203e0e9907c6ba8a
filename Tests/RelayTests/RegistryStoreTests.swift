import Crypto
import Foundation
import Provenance
import RelayShared
import Testing
import Wire
@testable import RelayServer

/// The registry's behaviour, the same on both stores: SQLite (one relay, the default) and a
/// real PostgreSQL (replicas). Every test runs once per store; the PostgreSQL ones each get a
/// fresh database on one server started for the suite.
@Suite(.postgresServer, .serialized) struct RegistryStoreTests {
    static func entry(_ sequence: UInt64, object name: String, state: String, source: String = "app") -> Relay_V1_StatusEntry {
        .with {
            $0.sequence = sequence
            $0.observedUnixMs = 1_700_000_000_000 + Int64(sequence)
            $0.object = .with {
                $0.apiVersion = "kustomize.toolkit.fluxcd.io/v1"
                $0.kind = "Kustomization"
                $0.namespace = "flux-system"
                $0.name = name
                $0.state = state
                $0.revisionApplied = "main@sha1:\(String(repeating: "a", count: 40))"
                $0.source = source
            }
        }
    }

    static func artifact(_ source: String, _ index: Int) -> PackagedArtifact {
        PackagedArtifact(source: source, revision: "main@sha1:\(index)", digest: "sha256:" + String(format: "%064x", index), size: UInt64(index),
                         commit: "\(index)", origin: "https://git.example/\(source)",
                         createdAt: Date(timeIntervalSince1970: 1_700_000_000 + Double(index)))
    }

    @Test(arguments: StoreKind.allCases)
    func accessFollowsAgentsTokensAndGrants(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let registry = under.registry
        let hash = String(repeating: "b", count: 64)
        try await registry.syncAgents([("edge", hash, ["app", "infra"])])
        let first = try await registry.accessSnapshot()
        #expect(first.identities[hash]?.name == "edge")
        #expect(first.identities[hash]?.sources == ["app", "infra"])
        // The same relay.yaml again changes nothing, so the version stays.
        try await registry.syncAgents([("edge", hash, ["app", "infra"])])
        #expect(try await registry.accessVersion() == first.version)

        // A CLI agent: created, rotated (two tokens), the old one revoked, then deleted.
        let token = try await registry.createAgent("store-7", sources: ["app"])
        #expect(try await registry.accessVersion() > first.version)
        let rotated = try await registry.rotateToken(agent: "store-7")
        var snapshot = try await registry.accessSnapshot()
        #expect(snapshot.identities[TokenHash.sha256Hex(token)]?.name == "store-7")
        #expect(snapshot.identities[TokenHash.sha256Hex(rotated)]?.name == "store-7")
        #expect(try await registry.revokeTokens(agent: "store-7") == 1)
        snapshot = try await registry.accessSnapshot()
        #expect(snapshot.identities[TokenHash.sha256Hex(token)] == nil)
        #expect(snapshot.identities[TokenHash.sha256Hex(rotated)]?.name == "store-7")
        await #expect(throws: AgentAdminError.self) { try await registry.revokeTokens(agent: "store-7") }
        await #expect(throws: AgentAdminError.self) { try await registry.createAgent("store-7", sources: []) }
        await #expect(throws: AgentAdminError.self) { try await registry.deleteAgent("edge") }
        #expect(try await registry.agentTokens().map(\.name) == ["edge", "store-7"])
        try await registry.deleteAgent("store-7")
        #expect(try await registry.accessSnapshot().identities.count == 1)
        // A configured agent that leaves relay.yaml goes, tokens and grants with it.
        try await registry.syncAgents([])
        #expect(try await registry.accessSnapshot().identities.isEmpty)
        await under.close()
    }

    @Test(arguments: StoreKind.allCases)
    func revisionsAndDeliveriesAreRecordedOnce(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let registry = under.registry
        for index in 1...3 { try await registry.record(Self.artifact("app", index)) }
        try await registry.record(Self.artifact("infra", 9))
        try await registry.record(Self.artifact("app", 2))  // again: idempotent
        let latest = try await registry.latestArtifacts()
        #expect(latest["app"] == Self.artifact("app", 3))
        #expect(latest["infra"] == Self.artifact("infra", 9))
        #expect(try await registry.revisions(source: "app").map(\.commit) == ["3", "2", "1"])
        #expect(try await registry.revisions(source: "app", limit: 1, before: 1_700_000_003_000).map(\.commit) == ["2"])
        #expect(try await registry.artifact(digest: Self.artifact("app", 1).digest, amongSources: ["infra", "app"])?.commit == "1")
        #expect(try await registry.artifact(digest: Self.artifact("app", 1).digest, amongSources: ["infra"]) == nil)

        let two = Self.artifact("app", 2)
        try await registry.recordDelivery(agent: "edge", source: "app", revision: two.revision, digest: two.digest)
        try await registry.recordDelivery(agent: "edge", source: "app", revision: two.revision, digest: two.digest)
        #expect(try await registry.deliveries(agent: "edge").map(\.digest) == [two.digest])
        #expect(try await registry.deliveries(source: "app", digests: [two.digest, "sha256:none"]).count == 1)
        #expect(try await registry.latestDeliveries().map(\.agent) == ["edge"])
        await under.close()
    }

    @Test(arguments: StoreKind.allCases)
    func statusIsStoredOnceInOrderAndSurvivesRetention(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let registry = under.registry
        let batch = (1...5).map { Self.entry($0, object: "apps", state: $0 == 5 ? "ready" : "progressing") }
        let stored = try await registry.storeStatus(agent: "edge", journal: "j1", entries: batch)
        #expect(stored.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(stored.map(\.id) == stored.map(\.id).sorted())
        // A replay (reconnect) stores nothing.
        #expect(try await registry.storeStatus(agent: "edge", journal: "j1", entries: batch).isEmpty)
        let page = try await registry.timelinePage(.init(since: 0, agent: "edge", limit: 3))
        #expect(page.map(\.id) == Array(stored.map(\.id).prefix(3)))
        #expect(try await registry.timeline(.init(since: stored[2].id, limit: 10)).map(\.sequence) == [4, 5])
        #expect(try await registry.latestStatusID() == stored.last?.id)
        let objects = try await registry.fluxObjects(agent: "edge")
        #expect(objects.map(\.state) == ["ready"])
        #expect(try await registry.statusAcknowledgement(agent: "edge")?.upTo == 5)

        // Retention removes entries, keeps the objects' state and the journal's mark: what
        // was received before is not stored again.
        let cutoff = try await registry.statusRetentionCutoff(maxAge: nil, maxEntries: 2)
        #expect(cutoff == stored[3].id)
        #expect(try await registry.deleteStatus(below: cutoff, batch: 100) == 3)
        #expect(try await registry.timeline(.init(limit: 10)).map(\.sequence) == [4, 5])
        #expect(try await registry.storeStatus(agent: "edge", journal: "j1", entries: batch).isEmpty)
        #expect(try await registry.fluxObjects(agent: "edge").count == 1)
        // A deleted object leaves the latest state.
        _ = try await registry.storeStatus(agent: "edge", journal: "j1", entries: [Self.entry(6, object: "apps", state: "deleted")])
        #expect(try await registry.fluxObjects(agent: "edge").isEmpty)
        await under.close()
    }

    @Test(arguments: StoreKind.allCases)
    func bundleSequencesAndAgentKeys(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let registry = under.registry
        try await registry.syncAgents([("edge", String(repeating: "c", count: 64), ["app"])])
        let first = try await registry.reserveBundleSequence(agent: "edge", createdAt: Date(), expiresAt: nil, kind: "full")
        let second = try await registry.reserveBundleSequence(agent: "edge", createdAt: Date(), expiresAt: Date(), kind: "delta")
        #expect((first, second) == (1, 2))
        #expect(try await registry.lastBundleExportRecord(agent: "edge") == nil)
        try await registry.completeBundleExport(agent: "edge", sequence: 2, bytes: 1234, parts: 2)
        let record = try await registry.lastBundleExportRecord(agent: "edge")
        #expect(record?.sequence == 2 && record?.bytes == 1234 && record?.parts == 2 && record?.kind == "delta")

        let key = TrustedKey(P256.Signing.PrivateKey().publicKey)
        #expect(try await registry.trustAgentKeys(agent: "edge", keys: [key]) == [key.id])
        #expect(try await registry.trustAgentKeys(agent: "edge", keys: [key]).isEmpty)
        #expect(try await registry.agentPublicKeys("edge") == [key])
        #expect(try await registry.agentKeyList("edge").map(\.keyID) == [key.id])
        try await registry.removeAgentKey(agent: "edge", keyID: key.id)
        await #expect(throws: AgentKeyError.self) { try await registry.removeAgentKey(agent: "edge", keyID: key.id) }
        await #expect(throws: AgentAdminError.self) { try await registry.trustAgentKeys(agent: "nobody", keys: [key]) }
        #expect(try await registry.agentExists("edge"))
        await under.close()
    }

    @Test(arguments: StoreKind.allCases)
    func theGroupCommitFailsOnlyTheWriteThatFailed(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let registry = under.registry
        try await registry.syncAgents([("a", String(repeating: "a", count: 64), [])])
        let commits = GroupCommit(registry: registry)
        let queued = (1...100).map { version in
            commits.queue { db in try db.execute(sql: "UPDATE agent SET version = ? WHERE name = 'a'", arguments: ["\(version)"]) }
        }
        let bad = commits.queue { db in try db.execute(sql: "UPDATE no_such_table SET x = 1") }
        let good = commits.queue { db in try db.execute(sql: "UPDATE agent SET connected = 1 WHERE name = 'a'") }
        for commit in queued { try await commit.committed() }
        await #expect(throws: (any Error).self) { try await bad.committed() }
        try await good.committed()
        let agent = try await registry.agentSummaries().first
        #expect(agent?.version == "100")
        #expect(agent?.connected == true)
        await under.close()
    }

    /// Two registries on one store (two replicas): notifications in the outbox are claimed by
    /// one of them each, and a claim held by a replica that died lapses.
    @Test(arguments: StoreKind.allCases)
    func eachNotificationIsClaimedByOneSender(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let other = try await under.reopen()
        try await under.registry.store.write { db in
            for target in 0..<20 {
                try db.execute(sql: "INSERT INTO outbox(target, url, body, next_attempt_ms, created_ms) VALUES (?, 'http://x', '{}', 0, 0)",
                               arguments: ["t\(target)"])
            }
        }
        async let a = under.registry.claimDueNotifications(owner: "a", lease: .seconds(60))
        async let b = other.claimDueNotifications(owner: "b", lease: .seconds(60))
        let (claimedA, claimedB) = try await (a, b)
        #expect(claimedA.count + claimedB.count == 20)
        #expect(Set(claimedA.map(\.id)).isDisjoint(with: claimedB.map(\.id)))
        #expect(try await other.claimDueNotifications(owner: "b", lease: .seconds(60)).isEmpty)
        // A claim that lapsed (its owner died) is taken by the next sender.
        try await other.store.write { db in try db.execute(sql: "UPDATE outbox SET claimed_until_ms = 1 WHERE target = 't0'") }
        #expect(try await other.claimDueNotifications(owner: "b", lease: .seconds(60)).map(\.target) == ["t0"])
        await other.store.close()
        await under.close()
    }

    /// Writers on two registries at once (replicas) and a follower reading the feed after its
    /// cursor, as the SSE stream does: the follower sees every entry once, in id order, and
    /// never skips one that committed late.
    @Test(arguments: StoreKind.allCases)
    func theFeedNeverSkipsAnEntryWrittenByAnotherReplica(_ kind: StoreKind) async throws {
        let under = try await RegistryUnderTest(kind)
        let other = try await under.reopen()
        let writers = [under.registry, other]
        let perAgent = 40
        let agents = (0..<6).map { "edge-\($0)" }
        let follower = Task {
            var seen: [Int64] = []
            var after: Int64 = 0
            let deadline = ContinuousClock.now + .seconds(20)
            while seen.count < agents.count * perAgent, ContinuousClock.now < deadline {
                let entries = try await under.registry.feedEntries(after: after, limit: 50)
                seen += entries.map(\.id)
                after = entries.last?.id ?? after
                if entries.isEmpty { try await Task.sleep(for: .milliseconds(2)) }
            }
            return seen
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, agent) in agents.enumerated() {
                group.addTask {
                    for sequence in stride(from: 1, through: perAgent, by: 4) {
                        let batch = (UInt64(sequence)...UInt64(sequence + 3)).map { Self.entry($0, object: "o\($0)", state: "ready") }
                        _ = try await writers[index % 2].storeStatus(agent: agent, journal: "j", entries: batch)
                    }
                }
            }
            try await group.waitForAll()
        }
        let seen = try await follower.value
        let stored = try await under.registry.timelinePage(.init(limit: 1000)).map(\.id)
        #expect(stored.count == agents.count * perAgent)
        #expect(seen == stored)
        await other.store.close()
        await under.close()
    }

    /// Replicas starting together migrate one at a time: all open, the schema is applied once.
    @Test func replicasStartingTogetherMigrateOnce() async throws {
        let under = try await RegistryUnderTest(.postgres)
        guard let server = PostgresServerTrait.current, let base = under.settings else { return }
        let fresh = "fresh_\(UInt32.random(in: 0...UInt32.max))"
        _ = try server.sql("CREATE DATABASE \(fresh)", database: "postgres")
        var copy = base
        copy.database = fresh
        let settings = copy
        let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
            for _ in 0..<4 { group.addTask { try await PostgresStore.open(settings, logger: .init(label: "test")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(stores.count == 4)
        #expect(try server.sql("SELECT count(*) FROM relay_schema_migration", database: fresh) == "\(PostgresSchema.migrations.count)")
        for store in stores { await store.close() }
        await under.close()
    }

    /// `relay-server db copy`: a SQLite registry moves into an empty PostgreSQL with its ids
    /// (feed positions, deliveries' order, outbox), and the copy goes on where SQLite stopped.
    @Test func aSQLiteRegistryCopiesIntoPostgreSQLWithItsIds() async throws {
        let sqlite = try await RegistryUnderTest(.sqlite)
        let postgres = try await RegistryUnderTest(.postgres)
        let source = sqlite.registry
        try await source.syncAgents([("edge", String(repeating: "d", count: 64), ["app"])])
        let token = try await source.createAgent("store-1", sources: ["app"])
        for index in 1...3 { try await source.record(Self.artifact("app", index)) }
        try await source.recordDelivery(agent: "edge", source: "app", revision: "r", digest: Self.artifact("app", 2).digest)
        try await source.recordDelivery(agent: "store-1", source: "app", revision: "r", digest: Self.artifact("app", 3).digest)
        _ = try await source.storeStatus(agent: "edge", journal: "j", entries: (1...7).map { Self.entry($0, object: "o\($0 % 2)", state: "ready") })
        _ = try await source.deleteStatus(below: 3, batch: 10)  // ids now start at 3
        try await source.store.write { db in
            try db.execute(sql: "INSERT INTO outbox(target, url, body, next_attempt_ms, created_ms) VALUES ('gitlab:app', 'http://x', '{}', 0, 0)")
        }

        let counts = try await RegistryCopy.copy(from: source, to: postgres.registry)
        #expect(counts["status_entry"] == 5 && counts["delivery"] == 2 && counts["agent"] == 2 && counts["outbox"] == 1)
        let target = postgres.registry
        #expect(try await target.accessSnapshot().identities == source.accessSnapshot().identities)
        #expect(try await target.accessSnapshot().identities[TokenHash.sha256Hex(token)]?.name == "store-1")
        #expect(try await target.timelinePage(.init(limit: 100)).map(\.id) == source.timelinePage(.init(limit: 100)).map(\.id))
        #expect(try await target.latestArtifacts() == source.latestArtifacts())
        #expect(try await target.fluxObjects() == source.fluxObjects())
        #expect(try await target.statusAcknowledgement(agent: "edge")?.upTo == 7)
        let copiedDeliveries = try await target.store.read { db in try Int64.fetchAll(db, sql: "SELECT rowid FROM delivery ORDER BY rowid") }
        #expect(copiedDeliveries == [1, 2])
        // Identities continue after the copied ids; the journal's mark holds.
        let next = try await target.storeStatus(agent: "edge", journal: "j", entries: (6...8).map { Self.entry($0, object: "o", state: "ready") })
        #expect(next.map(\.sequence) == [8])
        #expect(next.first.map(\.id) == 8)
        try await target.recordDelivery(agent: "edge", source: "app", revision: "r", digest: Self.artifact("app", 3).digest)
        #expect(try await target.store.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(rowid) FROM delivery") } == 3)
        // A second copy into the now non-empty database is refused and changes nothing.
        await #expect(throws: RegistryCopy.Failure.self) { try await RegistryCopy.copy(from: source, to: target) }
        #expect(try await target.timelinePage(.init(limit: 100)).count == 6)
        await sqlite.close()
        await postgres.close()
    }

    /// Agents shown connected to a replica that stopped renewing its lease are disconnected;
    /// those of live replicas are left alone.
    @Test func agentsOfAReplicaWhoseLeaseLapsedAreNotShownConnected() async throws {
        let under = try await RegistryUnderTest(.postgres)
        let registry = under.registry
        try await registry.syncAgents([("a", String(repeating: "a", count: 64), []), ("b", String(repeating: "b", count: 64), []),
                                       ("c", String(repeating: "c", count: 64), [])])
        let start = Date()
        _ = try await registry.renewReplicaLease("r-live", lapsedAfter: .seconds(40), now: start)
        _ = try await registry.renewReplicaLease("r-dead", lapsedAfter: .seconds(40), now: start)
        try await registry.store.write { db in
            try db.execute(sql: "UPDATE agent SET connected = 1, replica = 'r-live' WHERE name = 'a'")
            try db.execute(sql: "UPDATE agent SET connected = 1, replica = 'r-dead' WHERE name = 'b'")
            try db.execute(sql: "UPDATE agent SET connected = 1, replica = 'r-gone' WHERE name = 'c'")
        }
        // Both leases fresh: only c (a replica with no lease at all) is cleared.
        #expect(try await registry.renewReplicaLease("r-live", lapsedAfter: .seconds(40), now: start.addingTimeInterval(10)) == 1)
        // 60 s on only r-live renewed: b's replica lapsed.
        #expect(try await registry.renewReplicaLease("r-live", lapsedAfter: .seconds(40), now: start.addingTimeInterval(60)) == 1)
        let connected = try await registry.agentSummaries().filter(\.connected).map(\.name)
        #expect(connected == ["a"])
        await under.close()
    }

    /// A closed PostgreSQL store refuses calls with a clear error (the relay stopping), it
    /// does not open new connections.
    @Test func aClosedPostgresStoreRefusesCalls() async throws {
        let under = try await RegistryUnderTest(.postgres)
        #expect(try await under.registry.latestStatusID() == 0)
        await under.registry.store.close()
        await #expect(throws: PostgresStoreError.self) { try await under.registry.latestStatusID() }
        await under.close()
    }
}

