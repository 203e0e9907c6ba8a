import Foundation
import RelayShared
import Wire

/// One stored status entry as the API, the live stream and the notifiers see it.
public struct StatusRecord: Sendable, Codable, Equatable {
    public struct Object: Sendable, Codable, Equatable {
        public var apiVersion: String
        public var kind: String
        public var namespace: String
        public var name: String
        public var state: String
        public var reason: String
        public var message: String
        public var revisionApplied: String
        public var revisionAttempted: String
        public var source: String
        public var lastTransitionTime: Date?
    }

    public struct Event: Sendable, Codable, Equatable {
        public var kind: String
        public var namespace: String
        public var name: String
        public var severity: String
        public var reason: String
        public var message: String
        public var revision: String
        public var controller: String
        public var timestamp: Date?
        public var metadata: [String: String]
    }

    public struct Gap: Sendable, Codable, Equatable {
        public var first: UInt64
        public var last: UInt64
        public var reason: String
    }

    /// Position in the relay's feed (`since` and `Last-Event-ID` take it). Not part of the
    /// stored JSON: it is added when the record is sent (`json(id:payload:)`).
    public var id: Int64 = 0
    public var agent: String
    public var journal: String
    public var sequence: UInt64
    public var observedAt: Date
    public var receivedAt: Date
    /// "object", "event" or "gap".
    public var type: String
    public var object: Object?
    public var event: Event?
    public var gap: Gap?
    /// The record's JSON without `id`, made once when it is stored and sent as is by the
    /// stream and the timeline (see `json(id:payload:)`).
    public var payload: Data?

    enum CodingKeys: String, CodingKey {
        case agent, journal, sequence, observedAt, receivedAt, type, object, event, gap
    }

    /// The record's JSON with its feed id: `{"id":N,` spliced before the stored payload's
    /// fields (key order carries no meaning in JSON).
    static func json(id: Int64, payload: Data) -> Data {
        var data = Data("{\"id\":\(id)".utf8)
        if payload.count > 2 { data.append(UInt8(ascii: ",")) }
        data.append(payload.dropFirst())
        return data
    }
}

extension StatusRecord {
    /// The record for an entry (id and received time filled in when stored). Fields over the
    /// entry caps are cut here too (`StatusEntryLimits`): an older or hostile agent may send more.
    init?(agent: String, journal: String, entry unchecked: Relay_V1_StatusEntry, receivedAt: Date) {
        let entry = StatusEntryLimits.clamped(unchecked)
        func date(_ ms: Int64) -> Date? { ms > 0 ? Date(timeIntervalSince1970: Double(ms) / 1000) : nil }
        self.init(id: 0, agent: agent, journal: journal, sequence: entry.sequence,
                  observedAt: date(entry.observedUnixMs) ?? receivedAt, receivedAt: receivedAt, type: "")
        switch entry.kind {
        case .object(let o)?:
            type = "object"
            object = Object(apiVersion: o.apiVersion, kind: o.kind, namespace: o.namespace, name: o.name, state: o.state,
                            reason: o.reason, message: o.message, revisionApplied: o.revisionApplied,
                            revisionAttempted: o.revisionAttempted, source: o.source, lastTransitionTime: date(o.lastTransitionUnixMs))
        case .event(let e)?:
            type = "event"
            event = Event(kind: e.kind, namespace: e.namespace, name: e.name, severity: e.severity, reason: e.reason,
                          message: e.message, revision: e.revision, controller: e.controller, timestamp: date(e.timestampUnixMs),
                          metadata: e.metadata)
        case .gap(let g)?:
            type = "gap"
            gap = Gap(first: g.first, last: g.last, reason: g.reason)
        case nil:
            return nil  // a newer agent's entry kind: not stored, still acknowledged
        }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(StatusRecord.timestamp(date))
        }
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = RFC3339.parse(text) else { throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad date \(text)")) }
            return date
        }
        return decoder
    }()

    /// RFC 3339 UTC with milliseconds.
    static func timestamp(_ date: Date) -> String { RFC3339.format(date, milliseconds: true) }
}

/// The latest state of one Flux object on one agent.
public struct FluxObjectState: Sendable, Codable, Equatable {
    public var agent: String
    public var kind: String
    public var namespace: String
    public var name: String
    public var state: String
    public var reason: String
    public var message: String
    public var revisionApplied: String
    public var revisionAttempted: String
    public var source: String
    public var lastTransitionTime: Date?
    public var updatedAt: Date
}

/// Query for the timeline.
public struct TimelineQuery: Sendable {
    /// `limit` when none is given, and the most one request returns (larger ones are capped).
    public static let defaultLimit = 100
    public static let maxLimit = 1000
    /// Rows are read from the database in pages of about this many payload bytes.
    public static let pageBytes = 1 << 20

    public var since: Int64 = 0
    public var agent: String?
    public var source: String?
    public var limit: Int = 500
    public init(since: Int64 = 0, agent: String? = nil, source: String? = nil, limit: Int = 500) {
        self.since = since
        self.agent = agent
        self.source = source
        self.limit = limit
    }
}

extension Registry {
    /// Stores a batch from one agent in one transaction. Entries already stored (a replay
    /// after a reconnect) are skipped. Returns the newly stored records, in order.
    public func storeStatus(agent: String, journal: String, entries: [Relay_V1_StatusEntry],
                            receivedAt: Date = Date()) async throws -> [StatusRecord] {
        try await store.write { db in try Self.storeStatus(db, agent: agent, journal: journal, entries: entries, receivedAt: receivedAt) }
    }

    /// The tunnel's: the batch shares a transaction with other sessions' writes, so a fleet's
    /// status costs a few commits a second rather than one per batch.
    func storeStatus(agent: String, journal: String, entries: [Relay_V1_StatusEntry], commits: GroupCommit) async throws -> [StatusRecord] {
        let receivedAt = Date()
        return try await commits.write { db in
            try Self.storeStatus(db, agent: agent, journal: journal, entries: entries, receivedAt: receivedAt)
        }
    }

    static func storeStatus(_ db: any SQLConnection, agent: String, journal: String, entries: [Relay_V1_StatusEntry],
                            receivedAt: Date) throws -> [StatusRecord] {
        var stored: [StatusRecord] = []
        try Self.lockFeed(db)
        // Entries at or below the journal's mark were received before (kept, or since
        // removed by retention): never stored twice.
        let mark = try Int64.fetchOne(db, sql: "SELECT up_to FROM status_journal_mark WHERE agent = ? AND journal = ?",
                                      arguments: [agent, journal]) ?? 0
        if let highest = entries.map(\.sequence).max() {
            try db.execute(sql: """
                INSERT INTO status_journal_mark(agent, journal, up_to, updated_ms) VALUES (?, ?, ?, ?)
                ON CONFLICT(agent, journal) DO UPDATE SET up_to = \(db.greatest("status_journal_mark.up_to", "excluded.up_to")), updated_ms = excluded.updated_ms
                """, arguments: [agent, journal, Int64(clamping: highest), Self.milliseconds(receivedAt)])
        }
        // New entries, once each, in the order sent.
        var seen = Set<UInt64>()
        var fresh: [(record: StatusRecord, encoded: Data)] = []
        for entry in entries where Int64(clamping: entry.sequence) > mark && seen.insert(entry.sequence).inserted {
            guard let record = StatusRecord(agent: agent, journal: journal, entry: entry, receivedAt: receivedAt) else { continue }
            fresh.append((record, try StatusRecord.encoder.encode(record)))
        }
        // A few multi-row INSERTs instead of one per entry: one round trip per 200 entries
        // on PostgreSQL (measured with Benchmarks/replica_bench.py, phase s). Ids follow the
        // VALUES order; rows already stored come back as no id.
        for start in stride(from: 0, to: fresh.count, by: Self.statusRowsPerInsert) {
            let chunk = fresh[start..<min(fresh.count, start + Self.statusRowsPerInsert)]
            var arguments: [(any SQLBindable)?] = []
            arguments.reserveCapacity(chunk.count * 13)
            for (record, encoded) in chunk {
                arguments += [agent, journal, Int64(clamping: record.sequence), Self.milliseconds(record.observedAt),
                              Self.milliseconds(receivedAt), record.type,
                              record.object?.kind ?? record.event?.kind, record.object?.namespace ?? record.event?.namespace,
                              record.object?.name ?? record.event?.name, record.object?.state ?? record.event?.severity,
                              record.object?.revisionApplied ?? record.event?.revision, record.object?.source,
                              String(decoding: encoded, as: UTF8.self)]
            }
            var ids: [Int64: Int64] = [:]
            try db.forEachRow(sql: """
                INSERT INTO status_entry(agent, journal, sequence, observed_ms, received_ms, type, kind, namespace, name,
                                         state, revision, source, payload)
                VALUES \(Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", "))
                ON CONFLICT(agent, journal, sequence) DO NOTHING
                RETURNING id, sequence
                """, arguments: SQLArguments(arguments)) { row in
                ids[row["sequence"]] = row["id"]
                return true
            }
            for (record, encoded) in chunk {
                guard let id = ids[Int64(clamping: record.sequence)] else { continue }
                var record = record
                record.id = id
                record.payload = encoded
                if let object = record.object { try Self.updateFluxObject(db, agent: agent, object, record: record) }
                stored.append(record)
            }
        }
        stored.sort { $0.id < $1.id }
        if db.dialect == .postgres, !stored.isEmpty {
            // Replicas' live feeds read the new rows now rather than at their next poll.
            try db.execute(sql: "SELECT pg_notify(?, '')", arguments: [ReplicaWakeups.status])
        }
        return stored
    }

    /// Status rows per INSERT statement (13 arguments each: far below either database's limit).
    static let statusRowsPerInsert = 200

    /// The latest state of a Flux object, from a newly stored entry.
    static func updateFluxObject(_ db: any SQLConnection, agent: String, _ object: StatusRecord.Object, record: StatusRecord) throws {
        try db.execute(sql: """
            INSERT INTO flux_object(agent, kind, namespace, name, state, reason, message, revision_applied,
                                    revision_attempted, source, last_transition_ms, updated_ms, entry_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(agent, kind, namespace, name) DO UPDATE SET
              state = excluded.state, reason = excluded.reason, message = excluded.message,
              revision_applied = excluded.revision_applied, revision_attempted = excluded.revision_attempted,
              source = excluded.source, last_transition_ms = excluded.last_transition_ms,
              updated_ms = excluded.updated_ms, entry_id = excluded.entry_id
            """, arguments: [agent, object.kind, object.namespace, object.name, object.state, object.reason, object.message,
                             object.revisionApplied, object.revisionAttempted, object.source,
                             object.lastTransitionTime.map(Self.milliseconds) ?? 0, Self.milliseconds(record.observedAt), record.id])
        if object.state == "deleted" {
            try db.execute(sql: "DELETE FROM flux_object WHERE agent = ? AND kind = ? AND namespace = ? AND name = ?",
                           arguments: [agent, object.kind, object.namespace, object.name])
        }
    }

    /// Feed ids must become visible in order: a reader that saw id N never later meets a
    /// smaller one. SQLite has one writer, so that holds. PostgreSQL hands out sequence values
    /// to concurrent transactions that may commit in another order; writers of status take
    /// this transaction-scoped lock first, so ids are allocated and committed one writer at a
    /// time, across every replica. Deliveries (read in `rowid` order by the notifier) take the
    /// same lock: one group commit may write both, and two locks taken in either order by two
    /// replicas could deadlock.
    static func lockFeed(_ db: any SQLConnection) throws {
        try db.lockForTransaction(PostgresSchema.feedLock)
    }

    /// Entries after `since`, oldest first, as stored JSON (no decoding: for the stream and the
    /// API): at most `query.limit`, and no more rows once `maxBytes` of payload are read (at
    /// least one), so a page of large entries stays small in memory.
    public func timelinePage(_ query: TimelineQuery, maxBytes: Int = TimelineQuery.pageBytes) async throws -> [(id: Int64, payload: Data)] {
        try await store.read { db in
            let (sql, arguments) = Self.timelineSQL(query)
            var rows: [(id: Int64, payload: Data)] = []
            var bytes = 0
            try db.forEachRow(sql: sql, arguments: arguments) { row in
                let payload: Data = row["payload"]
                bytes += payload.count
                rows.append((row["id"], payload))
                return bytes < maxBytes
            }
            return rows
        }
    }

    /// Whether an entry matching `query` comes after `since`.
    public func timelineHasEntries(_ query: TimelineQuery) async throws -> Bool {
        var probe = query
        probe.limit = 1
        return try await !timelinePage(probe, maxBytes: 1).isEmpty
    }

    static func timelineSQL(_ query: TimelineQuery) -> (String, SQLArguments) {
        var sql = "SELECT id, payload FROM status_entry WHERE id > ?"
        var arguments: [(any SQLBindable)?] = [query.since]
        if let agent = query.agent { sql += " AND agent = ?"; arguments.append(agent) }
        if let source = query.source { sql += " AND source = ?"; arguments.append(source) }
        sql += " ORDER BY id LIMIT ?"
        arguments.append(max(1, min(query.limit, TimelineQuery.maxLimit)))
        return (sql, SQLArguments(arguments))
    }

    /// Entries after `since`, oldest first.
    public func timeline(_ query: TimelineQuery) async throws -> [StatusRecord] {
        try await store.read { db in try Self.timeline(db, query) }
    }

    static func timeline(_ db: any SQLConnection, _ query: TimelineQuery) throws -> [StatusRecord] {
        let (sql, arguments) = timelineSQL(query)
        return try SQLRow.fetchAll(db, sql: sql, arguments: arguments).compactMap { row in
            var record = try? StatusRecord.decoder.decode(StatusRecord.self, from: row["payload"] as Data)
            record?.id = row["id"]
            return record
        }
    }

    /// The latest state of the Flux objects, of one agent or consuming one source when given.
    public func fluxObjects(agent: String? = nil, source: String? = nil) async throws -> [FluxObjectState] {
        try await store.read { db in
            var sql = "SELECT * FROM flux_object WHERE 1 = 1"
            var arguments: [(any SQLBindable)?] = []
            if let agent { sql += " AND agent = ?"; arguments.append(agent) }
            if let source { sql += " AND source = ?"; arguments.append(source) }
            sql += " ORDER BY agent, kind, namespace, name"
            return try SQLRow.fetchAll(db, sql: sql, arguments: SQLArguments(arguments)).map { row in
                let transition: Int64 = row["last_transition_ms"]
                return FluxObjectState(agent: row["agent"], kind: row["kind"], namespace: row["namespace"], name: row["name"],
                                       state: row["state"], reason: row["reason"], message: row["message"],
                                       revisionApplied: row["revision_applied"], revisionAttempted: row["revision_attempted"],
                                       source: row["source"],
                                       lastTransitionTime: transition > 0 ? Date(timeIntervalSince1970: Double(transition) / 1000) : nil,
                                       updatedAt: Date(timeIntervalSince1970: Double(row["updated_ms"] as Int64) / 1000))
            }
        }
    }

    /// The newest feed position.
    public func latestStatusID() async throws -> Int64 {
        try await store.read { db in try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(id), 0) FROM status_entry") ?? 0 }
    }
}

/// An agent as the status API shows it.
public struct AgentSummary: Sendable, Codable, Equatable {
    public var name: String
    public var connected: Bool
    public var lastHeard: Date?
    public var version: String?
    /// The relay replica the agent's latest session is (or was) on.
    public var replica: String?
    public var sources: [String]
    /// Offline transfer (air gap): the last bundle exported and status bundle imported, and
    /// the newest status held from the agent. Nil when none of these exists.
    public var offline: OfflineTransfer?
    /// Seconds from the agent's newest status (`offline.newestStatusAt`) to now.
    public var newestStatusAgeSeconds: Double?
}

extension Registry {
    public func agentSummaries() async throws -> [AgentSummary] {
        var summaries = try await store.read { db in
            let grants = try SQLRow.fetchAll(db, sql: "SELECT agent, source FROM grant_ ORDER BY source")
            var sources: [String: [String]] = [:]
            for row in grants { sources[row["agent"], default: []].append(row["source"]) }
            let transfers = try self.offlineTransfers(db)
            let now = Date()
            return try SQLRow.fetchAll(db, sql: "SELECT * FROM agent ORDER BY name").map { row in
                let seen: Int64? = row["last_seen_ms"]
                let transfer = transfers[row["name"]]
                return AgentSummary(name: row["name"], connected: (row["connected"] as Int64) != 0,
                                    lastHeard: seen.map { Date(timeIntervalSince1970: Double($0) / 1000) }, version: row["version"],
                                    replica: row["replica"],
                                    sources: sources[row["name"]] ?? [], offline: transfer,
                                    newestStatusAgeSeconds: transfer?.newestStatusAt.map { max(0, now.timeIntervalSince($0)) })
            }
        }
        for index in summaries.indices {
            guard let export = try await lastBundleExport(agent: summaries[index].name) else { continue }
            summaries[index].offline = summaries[index].offline ?? OfflineTransfer()
            summaries[index].offline?.lastBundleExport = .init(sequence: export.sequence, createdAt: export.createdAt)
        }
        return summaries
    }

    /// The newest delivery per agent and source.
    public func latestDeliveries() async throws -> [Delivery] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: """
                SELECT d.* FROM delivery d
                JOIN (SELECT agent, source, MAX(delivered_ms) AS newest FROM delivery GROUP BY agent, source) n
                  ON d.agent = n.agent AND d.source = n.source AND d.delivered_ms = n.newest
                ORDER BY d.delivered_ms DESC
                """).map(Self.delivery)
        }
    }

    /// Deliveries of these digests of `source`.
    public func deliveries(source: String, digests: [String]) async throws -> [Delivery] {
        guard !digests.isEmpty else { return [] }
        return try await store.read { db in
            try SQLRow.fetchAll(db, sql: """
                SELECT * FROM delivery WHERE source = ? AND digest IN (\(digests.map { _ in "?" }.joined(separator: ",")))
                """, arguments: SQLArguments([source] + digests)).map(Self.delivery)
        }
    }

    static func delivery(_ row: SQLRow) -> Delivery {
        Delivery(agent: row["agent"], source: row["source"], revision: row["revision"], digest: row["digest"],
                 deliveredAt: Date(timeIntervalSince1970: Double(row["delivered_ms"] as Int64) / 1000))
    }
}

extension Registry {
    /// The first feed id that `retention` keeps: entries below it are older than `maxAge`
    /// (received before `now - maxAge`) or beyond the newest `maxEntries`. Reads only what it
    /// skips: ids grow with the time entries are received.
    public func statusRetentionCutoff(maxAge: Duration?, maxEntries: Int?, now: Date = Date()) async throws -> Int64 {
        let oldest = maxAge.map { Self.milliseconds(now) - Int64($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) }
        return try await store.read { db in
            var cutoff: Int64 = 0
            if let oldest {
                let first = try Int64.fetchOne(db, sql: "SELECT id FROM status_entry WHERE received_ms >= ? ORDER BY id LIMIT 1",
                                               arguments: [oldest])
                // Nothing recent enough: everything goes.
                cutoff = try first ?? (Int64.fetchOne(db, sql: "SELECT MAX(id) + 1 FROM status_entry") ?? 0)
            }
            if let maxEntries,
               let last = try Int64.fetchOne(db, sql: "SELECT id FROM status_entry ORDER BY id DESC LIMIT 1 OFFSET ?",
                                             arguments: [maxEntries]) {
                cutoff = max(cutoff, last + 1)
            }
            return cutoff
        }
    }

    /// Deletes up to `batch` of the oldest entries below `cutoff` in one short transaction;
    /// returns how many went. The Flux objects' latest state (`flux_object`) is kept.
    public func deleteStatus(below cutoff: Int64, batch: Int) async throws -> Int {
        try await store.write { db in
            return try db.execute(sql: "DELETE FROM status_entry WHERE id IN (SELECT id FROM status_entry WHERE id < ? ORDER BY id LIMIT ?)",
                           arguments: [cutoff, batch])
        }
    }

    /// Packaged revisions of `source`, newest first: at most `limit`, packaged before `before`
    /// (Unix milliseconds) when given.
    public func revisions(source: String, limit: Int, before: Int64?) async throws -> [PackagedArtifact] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: """
                SELECT * FROM revision WHERE source = ? AND created_ms < ? ORDER BY created_ms DESC LIMIT ?
                """, arguments: [source, before ?? Int64.max, limit]).map(Self.artifact)
        }
    }
}
