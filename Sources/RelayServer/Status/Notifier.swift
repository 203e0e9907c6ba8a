import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization

/// Turns stored status into GitLab commit statuses, Slack messages and JSON webhooks.
///
/// Two loops, both restart-safe through the database:
/// - `derive` reads the status feed after its cursor and, in the same transaction that
///   advances the cursor, queues what must be sent in `outbox`;
/// - `deliver` sends the oldest queued item of each target; a 2xx removes it, a refusal
///   (4xx other than 429) is logged and dropped, anything else is retried with backoff and
///   holds back that target's later items (GitLab state changes must arrive in order).
/// A GitLab or Slack that is down only delays notifications; delivery to agents never waits.
public final class Notifier: Sendable {
    let registry: Registry
    let feed: StatusFeed
    let sources: [ResolvedServerConfig.Source]
    let notifications: ResolvedServerConfig.Notifications
    let publicURL: String?
    let http: HTTPClient
    let logger: Logger
    let retryInitial: Duration
    let retryMax: Duration
    /// Who claims outbox items (this process; several replicas may share the outbox).
    let replica = "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)"
    /// GitLab environments already set up by this process (see `syncEnvironment`).
    let environmentsSynced = Mutex<Set<String>>([])

    public init(registry: Registry, feed: StatusFeed, sources: [ResolvedServerConfig.Source],
                notifications: ResolvedServerConfig.Notifications, publicURL: String?, logger: Logger,
                retryInitial: Duration = .seconds(1), retryMax: Duration = .seconds(300)) {
        self.registry = registry
        self.feed = feed
        self.sources = sources
        self.notifications = notifications
        self.publicURL = publicURL
        self.logger = logger
        self.retryInitial = retryInitial
        self.retryMax = retryMax
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(20))
        configuration.redirectConfiguration = .disallow
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Whether anything is configured to be notified.
    public var isActive: Bool { sources.contains { $0.gitlab != nil } || !notifications.slack.isEmpty || !notifications.webhooks.isEmpty }

    public func run() async {
        guard isActive else {
            try? await http.shutdown()
            return
        }
        if registry.dialect == .sqlite {
            // One process owns a SQLite outbox: claims left by a crash of this relay are void.
            try? await registry.store.write { db in try db.execute(sql: "UPDATE outbox SET claimed_until_ms = 0 WHERE claimed_until_ms > 0") }
        }
        let (wake, poke) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        await withDiscardingTaskGroup { group in
            group.addTask {
                // A subscription the notifier fell behind on ends: it subscribes again (it
                // reads the database after its cursor anyway).
                while !Task.isCancelled {
                    for await _ in self.feed.subscribe() { poke.yield() }
                    poke.yield()
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(2))
                    poke.yield()
                }
            }
            group.addTask {
                for await _ in wake {
                    do {
                        while try await self.derive() > 0 {}
                        try await self.deliverDue()
                    } catch {
                        self.logger.error("notifier failed; will retry", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        try? await http.shutdown()
    }

    // MARK: - Derive

    struct Item {
        var target: String
        var url: String
        var body: Data
        var method = "POST"
        /// A GitLab deployment (`gitlab_deployment.id`) whose GitLab id completes the URL
        /// (`{deployment}`), or 0.
        var deployment: Int64 = 0
    }

    /// Queues what new deliveries and status entries call for; returns how many it read.
    func derive() async throws -> Int {
        try await derivePending() + deriveDeployments() + deriveFromStatus()
    }

    /// A revision delivered to an agent but not yet picked up by Flux: `pending` for every
    /// Kustomization/HelmRelease there that consumes the source, unless something was
    /// already posted for that commit (a status never goes back to pending).
    func derivePending() async throws -> Int {
        // Cursor, reads and queued items in one transaction that holds the notifier lock:
        // replicas sharing a PostgreSQL take turns, and each delivery is derived once.
        try await registry.store.write { [self] db in
            try db.lockForTransaction(PostgresSchema.notifierLock)
            let cursor = try Registry.notifierCursor(db, "deliveries")
            let deliveries = try Registry.deliveries(db, afterRow: cursor, limit: 500)
            guard let last = deliveries.last else { return 0 }
            for (_, delivery) in deliveries {
                guard let gitlab = sources.first(where: { $0.name == delivery.source })?.gitlab,
                      let sha = Self.commit(of: delivery.revision) else { continue }
                let consumers = try SQLRow.fetchAll(db, sql: """
                    SELECT f.kind, f.namespace, f.name, n.gitlab_sha FROM flux_object f
                    LEFT JOIN notify_state n ON n.agent = f.agent AND n.kind = f.kind AND n.namespace = f.namespace AND n.name = f.name
                    WHERE f.agent = ? AND f.source = ? AND f.kind IN ('Kustomization', 'HelmRelease')
                    """, arguments: [delivery.agent, delivery.source])
                for row in consumers where (row["gitlab_sha"] as String?) != sha {
                    let (kind, namespace, name): (String, String, String) = (row["kind"], row["namespace"], row["name"])
                    try enqueue(db, Self.commitStatus(gitlab, source: delivery.source, sha: sha, revision: delivery.revision, state: "pending",
                                                      name: "relay/\(delivery.agent)/\(namespace)/\(name)",
                                                      description: "delivered to \(delivery.agent); waiting for \(kind) to apply it",
                                                      targetURL: publicURL))
                    try db.execute(sql: """
                        INSERT INTO notify_state(agent, kind, namespace, name, gitlab_state, gitlab_sha) VALUES (?, ?, ?, ?, 'pending', ?)
                        ON CONFLICT(agent, kind, namespace, name) DO UPDATE SET gitlab_state = 'pending', gitlab_sha = excluded.gitlab_sha
                        """, arguments: [delivery.agent, kind, namespace, name, sha])
                }
            }
            try setCursor(db, "deliveries", last.0)
            return deliveries.count
        }
    }

    func enqueue(_ db: any SQLConnection, _ item: Item) throws {
        try Self.enqueue(db, item)
    }

    static func enqueue(_ db: any SQLConnection, _ item: Item) throws {
        try db.execute(sql: "INSERT INTO outbox(target, url, body, next_attempt_ms, created_ms, method, deployment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       arguments: [item.target, item.url, String(decoding: item.body, as: UTF8.self),
                                   Registry.milliseconds(Date()), Registry.milliseconds(Date()), item.method, item.deployment])
    }

    func setCursor(_ db: any SQLConnection, _ name: String, _ position: Int64) throws {
        try db.execute(sql: """
            INSERT INTO notifier_cursor(name, position) VALUES (?, ?)
            ON CONFLICT(name) DO UPDATE SET position = excluded.position
            """, arguments: [name, position])
    }

    /// Reads up to 500 feed entries after the cursor and queues their notifications.
    func deriveFromStatus() async throws -> Int {
        try await registry.store.write { [self] db in
            try db.lockForTransaction(PostgresSchema.notifierLock)
            let entries = try Registry.timeline(db, .init(since: try Registry.notifierCursor(db, "notifier"), limit: 500))
            guard let last = entries.last else { return 0 }
            for record in entries {
                guard let object = record.object, object.kind == "Kustomization" || object.kind == "HelmRelease" else { continue }
                let previous = try SQLRow.fetchOne(db, sql: """
                    SELECT health, gitlab_state, gitlab_sha FROM notify_state WHERE agent = ? AND kind = ? AND namespace = ? AND name = ?
                    """, arguments: [record.agent, object.kind, object.namespace, object.name])
                var health: String = previous?["health"] ?? ""
                var gitlabState: String = previous?["gitlab_state"] ?? ""
                var gitlabSHA: String = previous?["gitlab_sha"] ?? ""
                var items: [Item] = []
                // Failures and recoveries.
                let failing = object.state == "failing" || object.state == "failed"
                if failing && health != "failing" {
                    items += alerts(kind: "failure", record: record, object: object)
                    health = "failing"
                } else if object.state == "ready" {
                    if health == "failing" { items += alerts(kind: "recovery", record: record, object: object) }
                    health = "ready"
                }
                // GitLab commit statuses.
                if let gitlab = sources.first(where: { $0.name == object.source })?.gitlab,
                   let (state, sha) = Self.commitStatus(object), state != gitlabState || sha != gitlabSHA {
                    items.append(commitStatusItem(gitlab, source: object.source, state: state, sha: sha, record: record, object: object))
                    gitlabState = state
                    gitlabSHA = sha
                }
                items += try deploymentOutcome(db, agent: record.agent, object: object)
                for item in items { try enqueue(db, item) }
                if object.state == "deleted" {
                    try db.execute(sql: "DELETE FROM notify_state WHERE agent = ? AND kind = ? AND namespace = ? AND name = ?",
                                   arguments: [record.agent, object.kind, object.namespace, object.name])
                } else {
                    try db.execute(sql: """
                        INSERT INTO notify_state(agent, kind, namespace, name, health, gitlab_state, gitlab_sha) VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(agent, kind, namespace, name) DO UPDATE SET
                          health = excluded.health, gitlab_state = excluded.gitlab_state, gitlab_sha = excluded.gitlab_sha
                        """, arguments: [record.agent, object.kind, object.namespace, object.name, health, gitlabState, gitlabSHA])
                }
            }
            try setCursor(db, "notifier", last.id)
            return entries.count
        }
    }

    /// GitLab's state and the commit for a Flux object state: ready → success (the applied
    /// commit), progressing → running, failing/failed → failed (the attempted commit).
    static func commitStatus(_ object: StatusRecord.Object) -> (String, String)? {
        let state: String
        let revision: String
        switch object.state {
        case "ready": state = "success"; revision = object.revisionApplied
        case "progressing": state = "running"; revision = object.revisionAttempted.isEmpty ? object.revisionApplied : object.revisionAttempted
        case "failing", "failed": state = "failed"; revision = object.revisionAttempted.isEmpty ? object.revisionApplied : object.revisionAttempted
        default: return nil
        }
        return commit(of: revision).map { (state, $0) }
    }

    /// The Git commit of a revision string (`<ref>@sha1:<40 hex>` or `sha1:<40 hex>`).
    static func commit(of revision: String) -> String? {
        guard let range = revision.range(of: "sha1:", options: .backwards) else { return nil }
        let sha = String(revision[range.upperBound...])
        return sha.count == 40 && sha.allSatisfy(\.isHexDigit) ? sha : nil
    }

    func commitStatusItem(_ gitlab: ResolvedServerConfig.GitLabTarget, source: String, state: String, sha: String,
                          record: StatusRecord, object: StatusRecord.Object) -> Item {
        Self.commitStatus(gitlab, source: source, sha: sha, revision: object.revisionApplied, state: state,
                          name: "relay/\(record.agent)/\(object.namespace)/\(object.name)",
                          description: "\(object.kind) \(object.state)\(object.message.isEmpty ? "" : ": \(object.message)")", targetURL: publicURL)
    }

    /// A commit status (`POST /projects/:id/statuses/:sha`) on `source`'s GitLab project; `ref`
    /// from the revision when it names one (`<ref>@sha1:…`); texts cut to GitLab's 255.
    static func commitStatus(_ gitlab: ResolvedServerConfig.GitLabTarget, source: String, sha: String, revision: String, state: String,
                             name: String, description: String, targetURL: String?) -> Item {
        var body = ["state": state, "name": name, "description": String(description.prefix(255))]
        if let ref = revision.split(separator: "@").first, revision.contains("@") { body["ref"] = String(ref) }
        if let targetURL { body["target_url"] = String(targetURL.prefix(255)) }
        return Item(target: "gitlab:\(source)", url: "\(gitlab.projectAPI)/statuses/\(sha)", body: json(body))
    }

    /// `text` to every Slack webhook and `event` to every JSON webhook.
    static func broadcast(_ notifications: ResolvedServerConfig.Notifications, text: String, event: [String: String]) -> [Item] {
        notifications.slack.enumerated().map { Item(target: "slack:\($0.offset)", url: $0.element, body: json(["text": text])) }
            + notifications.webhooks.enumerated().map { Item(target: "webhook:\($0.offset)", url: $0.element, body: json(event)) }
    }

    func alerts(kind: String, record: StatusRecord, object: StatusRecord.Object) -> [Item] {
        let where_ = "\(object.namespace)/\(object.name) (\(object.kind)) on \(record.agent)"
        let revision = object.revisionAttempted.isEmpty ? object.revisionApplied : object.revisionAttempted
        let text = kind == "failure"
            ? ":x: \(where_) is \(object.state): \(object.message)\(revision.isEmpty ? "" : " — revision \(revision)")"
            : ":white_check_mark: \(where_) recovered: ready at \(object.revisionApplied)"
        return Self.broadcast(notifications, text: text, event: [
            "type": kind, "agent": record.agent, "kind": object.kind, "namespace": object.namespace, "name": object.name,
            "state": object.state, "reason": object.reason, "message": object.message, "revision": revision, "source": object.source,
            "feedID": String(record.id), "at": StatusRecord.timestamp(record.observedAt),
        ])
    }

    static func json(_ object: [String: String]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    // MARK: - Deliver

    struct Pending {
        var id: Int64; var target: String; var url: String; var body: String; var attempts: Int; var due: Int64
        var method = "POST"
        var deployment: Int64 = 0
    }

    /// Sends the head item of every target whose head is due, until nothing is due. Each head
    /// is claimed first (a lease in the outbox row): of several replicas, one sends it.
    func deliverDue() async throws {
        while true {
            let due = try await registry.claimDueNotifications(owner: replica, lease: Self.sendLease)
            RelayMetrics.notificationsPending.record(try await registry.outboxSize())
            if due.isEmpty { return }
            await withTaskGroup(of: Void.self) { group in
                for item in due { group.addTask { await self.send(item) } }
            }
        }
    }

    /// How long a claim on a notification lasts: longer than a send (20 s timeout). A replica
    /// that dies holding one delays that target by this much; another replica then sends it.
    static let sendLease: Duration = .seconds(60)

    func send(_ item: Pending) async {
        var url = item.url
        if item.deployment != 0, url.contains("{deployment}") {
            // GitLab's id of the deployment, known once its creation was answered.
            let remote: Int64
            do { remote = try await registry.gitlabDeploymentID(item.deployment) } catch {
                // Asked again when the claim lapses (`sendLease`).
                logger.warning("cannot read the deployment's GitLab id; retrying", metadata: ["error": "\(error)"])
                return
            }
            guard remote != 0 else {
                logger.error("deployment update dropped: GitLab did not create the deployment", metadata: ["target": "\(item.target)"])
                _ = try? await registry.store.write { [self] db in
                    try db.execute(sql: "DELETE FROM outbox WHERE id = ? AND claimed_by = ?", arguments: [item.id, replica])
                }
                return
            }
            url = url.replacingOccurrences(of: "{deployment}", with: String(remote))
        }
        if item.deployment != 0, item.method == "POST" { await syncEnvironment(item) }
        var request = HTTPClientRequest(url: url)
        request.method = item.method == "PUT" ? .PUT : .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "relay-server")
        if item.target.hasPrefix("gitlab:"), let token = sources.first(where: { "gitlab:\($0.name)" == item.target })?.gitlab?.token {
            request.headers.add(name: "PRIVATE-TOKEN", value: token)
        }
        request.body = .bytes(ByteBuffer(string: item.body))
        let outcome: (done: Bool, error: String?)
        do {
            let response = try await http.execute(request, timeout: .seconds(20))
            let text = String(buffer: try await response.body.collect(upTo: 1 << 16))
            let code = Int(response.status.code)
            switch code {
            case 200..<300:
                outcome = (true, nil)
                if item.deployment != 0, item.method == "POST",
                   let id = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["id"] as? Int {
                    try? await registry.store.write { db in
                        try db.execute(sql: "UPDATE gitlab_deployment SET remote_id = ? WHERE id = ?", arguments: [Int64(id), item.deployment])
                    }
                }
            case 429, 500...599: outcome = (false, "\(code) \(text.prefix(200))")
            default:
                logger.error("notification refused; dropping it", metadata: [
                    "target": "\(item.target)", "status": "\(code)", "answer": "\(text.prefix(300))"])
                outcome = (true, nil)
            }
        } catch {
            outcome = (false, "\(error)")
        }
        do {
            try await registry.store.write { [self] db in
                if outcome.done {
                    // Only while this sender still holds the claim (a send that outlived its
                    // lease may have been sent again by another replica: that one finishes it).
                    try db.execute(sql: "DELETE FROM outbox WHERE id = ? AND claimed_by = ?", arguments: [item.id, replica])
                    RelayMetrics.notificationsSent.increment()
                } else {
                    RelayMetrics.notificationsFailed.increment()
                    let attempts = item.attempts + 1
                    let delay = min(retryMax, retryInitial * Double(1 << min(attempts - 1, 16)))
                    let next = Registry.milliseconds(Date()) + delay.components.seconds * 1000 + delay.components.attoseconds / 1_000_000_000_000_000
                    try db.execute(sql: """
                        UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ?, claimed_until_ms = 0 WHERE id = ? AND claimed_by = ?
                        """, arguments: [attempts, next, outcome.error, item.id, replica])
                    if attempts == 1 || attempts % 10 == 0 {
                        logger.warning("notification not delivered; retrying", metadata: [
                            "target": "\(item.target)", "attempts": "\(attempts)", "error": "\(outcome.error ?? "")"])
                    }
                }
            }
        } catch {
            logger.error("cannot update the notification outbox", metadata: ["error": "\(error)"])
        }
    }
}

extension Registry {
    /// Deliveries recorded after a row id, oldest first.
    static func deliveries(_ db: any SQLConnection, afterRow row: Int64, limit: Int) throws -> [(Int64, Delivery)] {
        try SQLRow.fetchAll(db, sql: "SELECT rowid AS row_, * FROM delivery WHERE rowid > ? ORDER BY rowid LIMIT ?", arguments: [row, limit]).map {
            ($0["row_"], delivery($0))
        }
    }

    static func notifierCursor(_ db: any SQLConnection, _ name: String) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT position FROM notifier_cursor WHERE name = ?", arguments: [name]) ?? 0
    }

    /// Claims the head notification of every target that is due and not claimed by another
    /// sender, for `lease`. A target's later items wait behind its head, claimed or not.
    func claimDueNotifications(owner: String, lease: Duration) async throws -> [Notifier.Pending] {
        let now = Self.milliseconds(Date())
        let until = now + lease.components.seconds * 1000
        return try await store.write { db in
            let heads = try SQLRow.fetchAll(db, sql: """
                SELECT o.* FROM outbox o JOIN (SELECT target, MIN(id) AS head FROM outbox GROUP BY target) h ON o.id = h.head
                WHERE o.next_attempt_ms <= ? AND o.claimed_until_ms <= ?
                """, arguments: [now, now])
            var claimed: [Notifier.Pending] = []
            for row in heads {
                // Another replica may have claimed it since the read: only one UPDATE matches.
                let won = try db.execute(sql: "UPDATE outbox SET claimed_until_ms = ?, claimed_by = ? WHERE id = ? AND claimed_until_ms <= ?",
                                         arguments: [until, owner, row["id"] as Int64, now])
                guard won > 0 else { continue }
                claimed.append(Notifier.Pending(id: row["id"], target: row["target"], url: row["url"], body: row["body"],
                                                attempts: row["attempts"], due: row["next_attempt_ms"], method: row["method"],
                                                deployment: row["deployment"]))
            }
            return claimed
        }
    }

    /// Notifications waiting (for metrics and diagnostics).
    public func outboxSize() async throws -> Int {
        try await store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox") ?? 0 }
    }
}
