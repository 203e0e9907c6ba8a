import AsyncHTTPClient
import Foundation
import NIOCore

/// GitLab deployments from deliveries and Flux status (sources with `gitlab.environments`):
/// a delivery opens a `running` deployment in the agent's environment; Flux Ready with that
/// commit makes it `success`, a failure with it `failed`; a newer delivery before either
/// cancels it (`canceled`). Queued through the outbox like commit statuses: in order per
/// project, retried, never holding back delivery.
extension Notifier {
    /// Reads deliveries after the "deployments" cursor and queues deployment calls.
    func deriveDeployments() async throws -> Int {
        guard sources.contains(where: { !($0.gitlab?.environments.isEmpty ?? true) }) else { return 0 }
        return try await registry.store.write { [self] db in
            try db.lockForTransaction(PostgresSchema.notifierLock)
            let cursor = try Registry.notifierCursor(db, "deployments")
            let deliveries = try Registry.deliveries(db, afterRow: cursor, limit: 500)
            guard let last = deliveries.last else { return 0 }
            for (_, delivery) in deliveries {
                guard let gitlab = sources.first(where: { $0.name == delivery.source })?.gitlab,
                      let rule = gitlab.environments.rule(for: delivery.agent),
                      let sha = Self.commit(of: delivery.revision) else { continue }
                let open = try Self.openDeployment(db, source: delivery.source, agent: delivery.agent)
                if let open {
                    if open.sha == sha { continue }  // the same commit again (a re-delivery)
                    try db.execute(sql: "UPDATE gitlab_deployment SET status = 'canceled' WHERE id = ?", arguments: [open.id])
                    try enqueue(db, updateItem(gitlab, source: delivery.source, deployment: open.id, status: "canceled"))
                }
                let environment = rule.environment(for: delivery.agent)
                let now = Registry.milliseconds(Date())
                try db.execute(sql: """
                    INSERT INTO gitlab_deployment(source, agent, environment, sha, status, created_ms) VALUES (?, ?, ?, ?, 'running', ?)
                    """, arguments: [delivery.source, delivery.agent, environment, sha, now])
                let id = try Int64.fetchOne(db, sql: """
                    SELECT MAX(id) FROM gitlab_deployment WHERE source = ? AND agent = ?
                    """, arguments: [delivery.source, delivery.agent]) ?? 0
                var body: [String: Any] = ["environment": environment, "sha": sha, "tag": false, "status": "running"]
                body["ref"] = delivery.revision.contains("@") ? String(delivery.revision.split(separator: "@")[0]) : sha
                try enqueue(db, Item(target: "gitlab:\(delivery.source)", url: "\(gitlab.projectAPI)/deployments",
                                     body: Self.jsonAny(body), method: "POST", deployment: id))
                // Flux may have reported the commit before this delivery was read (the two
                // cursors move independently): settle the deployment from what is known now.
                let objects = try SQLRow.fetchAll(db, sql: """
                    SELECT state, revision_applied, revision_attempted FROM flux_object
                    WHERE agent = ? AND source = ? AND kind IN ('Kustomization', 'HelmRelease')
                    """, arguments: [delivery.agent, delivery.source])
                let outcomes = objects.compactMap { row in
                    Self.deploymentStatus(state: row["state"], applied: row["revision_applied"], attempted: row["revision_attempted"], sha: sha)
                }
                if let outcome = outcomes.contains("failed") ? "failed" : outcomes.first {
                    try db.execute(sql: "UPDATE gitlab_deployment SET status = ? WHERE id = ?", arguments: [outcome, id])
                    try enqueue(db, updateItem(gitlab, source: delivery.source, deployment: id, status: outcome))
                }
            }
            try setCursor(db, "deployments", last.0)
            return deliveries.count
        }
    }

    /// Called at start, before agents are served: on the first start with deployments, they
    /// start from now, not with every delivery in the registry's history.
    static func startDeployments(_ registry: Registry) async throws {
        try await registry.store.write { db in
            try db.lockForTransaction(PostgresSchema.notifierLock)
            guard try Int64.fetchOne(db, sql: "SELECT position FROM notifier_cursor WHERE name = 'deployments'") == nil else { return }
            let last = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(rowid), 0) FROM delivery") ?? 0
            try db.execute(sql: "INSERT INTO notifier_cursor(name, position) VALUES ('deployments', ?) ON CONFLICT(name) DO NOTHING",
                           arguments: [last])
        }
    }

    /// `success` or `failed` for the agent's running deployment when a Flux object consuming
    /// the source reports its commit Ready or failing.
    func deploymentOutcome(_ db: any SQLConnection, agent: String, object: StatusRecord.Object) throws -> [Item] {
        guard let gitlab = sources.first(where: { $0.name == object.source })?.gitlab, !gitlab.environments.isEmpty,
              let open = try Self.openDeployment(db, source: object.source, agent: agent) else { return [] }
        guard let status = Self.deploymentStatus(state: object.state, applied: object.revisionApplied, attempted: object.revisionAttempted,
                                                 sha: open.sha) else { return [] }
        try db.execute(sql: "UPDATE gitlab_deployment SET status = ? WHERE id = ?", arguments: [status, open.id])
        return [updateItem(gitlab, source: object.source, deployment: open.id, status: status)]
    }

    /// `success` when the object is Ready with `sha` applied, `failed` when it failed with
    /// `sha` attempted, else nil.
    static func deploymentStatus(state: String, applied: String, attempted: String, sha: String) -> String? {
        switch state {
        case "ready":
            return commit(of: applied) == sha ? "success" : nil
        case "failing", "failed":
            return commit(of: attempted.isEmpty ? applied : attempted) == sha ? "failed" : nil
        default:
            return nil
        }
    }

    private func updateItem(_ gitlab: ResolvedServerConfig.GitLabTarget, source: String, deployment: Int64, status: String) -> Item {
        Item(target: "gitlab:\(source)", url: "\(gitlab.projectAPI)/deployments/{deployment}",
             body: Self.jsonAny(["status": status]), method: "PUT", deployment: deployment)
    }

    static func openDeployment(_ db: any SQLConnection, source: String, agent: String) throws -> (id: Int64, sha: String)? {
        try SQLRow.fetchOne(db, sql: """
            SELECT id, sha FROM gitlab_deployment WHERE source = ? AND agent = ? AND status = 'running' ORDER BY id DESC LIMIT 1
            """, arguments: [source, agent]).map { ($0["id"], $0["sha"]) }
    }

    static func jsonAny(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    /// Before a deployment is created in an environment for the first time (by this process):
    /// the environment exists with the configured tier, cluster agent, namespace and Flux
    /// resource path (created, or updated when they differ), so GitLab's environment page
    /// shows the cluster's Flux objects. A failure here is logged; the deployment goes ahead
    /// (GitLab creates a missing environment itself, without those fields).
    func syncEnvironment(_ item: Pending) async {
        guard let source = sources.first(where: { "gitlab:\($0.name)" == item.target }), let gitlab = source.gitlab,
              let body = try? JSONSerialization.jsonObject(with: Data(item.body.utf8)) as? [String: Any],
              let name = body["environment"] as? String,
              let rule = gitlab.environments.first(where: { rule in
                  // The rule that produced this name (its agents are not known here).
                  rule.name.contains("{agent}") ? name.hasPrefix(rule.name.components(separatedBy: "{agent}")[0]) : rule.name == name
              }) else { return }
        let key = "\(gitlab.projectAPI)\u{0}\(name)"
        guard environmentsSynced.withLock({ !$0.contains(key) }) else { return }
        var wanted: [String: Any] = [:]
        if let tier = rule.tier { wanted["tier"] = tier }
        if let id = rule.clusterAgentID { wanted["cluster_agent_id"] = id }
        if let namespace = rule.kubernetesNamespace { wanted["kubernetes_namespace"] = namespace }
        if let path = rule.fluxResourcePath { wanted["flux_resource_path"] = path }
        do {
            let encoded = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? name
            let (status, listing) = try await gitlabCall("GET", "\(gitlab.projectAPI)/environments?name=\(encoded)", token: gitlab.token)
            guard status == 200, let existing = (try? JSONSerialization.jsonObject(with: Data(listing.utf8))) as? [[String: Any]] else {
                logger.warning("cannot list GitLab environments; deploying without updating the environment", metadata: [
                    "environment": "\(name)", "status": "\(status)"])
                return
            }
            if let environment = existing.first(where: { $0["name"] as? String == name }), let id = environment["id"] as? Int {
                let current: [String: Any] = [
                    "tier": environment["tier"] ?? NSNull(), "cluster_agent_id": (environment["cluster_agent"] as? [String: Any])?["id"] ?? NSNull(),
                    "kubernetes_namespace": environment["kubernetes_namespace"] ?? NSNull(), "flux_resource_path": environment["flux_resource_path"] ?? NSNull(),
                ]
                let differs = wanted.contains { key, value in "\(value)" != "\(current[key] ?? NSNull())" }
                if differs {
                    let (code, answer) = try await gitlabCall("PUT", "\(gitlab.projectAPI)/environments/\(id)", token: gitlab.token, body: wanted)
                    guard (200..<300).contains(code) else {
                        logger.warning("GitLab refused the environment update", metadata: ["environment": "\(name)", "status": "\(code)", "answer": "\(answer.prefix(300))"])
                        return
                    }
                }
            } else {
                var create = wanted
                create["name"] = name
                let (code, answer) = try await gitlabCall("POST", "\(gitlab.projectAPI)/environments", token: gitlab.token, body: create)
                guard (200..<300).contains(code) else {
                    logger.warning("GitLab refused to create the environment", metadata: ["environment": "\(name)", "status": "\(code)", "answer": "\(answer.prefix(300))"])
                    return
                }
            }
            environmentsSynced.withLock { _ = $0.insert(key) }
        } catch {
            logger.warning("cannot reach GitLab to set up the environment", metadata: ["environment": "\(name)", "error": "\(error)"])
        }
    }

    private func gitlabCall(_ method: String, _ url: String, token: String, body: [String: Any]? = nil) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        request.headers.add(name: "PRIVATE-TOKEN", value: token)
        request.headers.add(name: "User-Agent", value: "relay-server")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Self.jsonAny(body)))
        }
        let response = try await http.execute(request, timeout: .seconds(20))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }
}

extension Registry {
    /// GitLab's id of a deployment the relay created (0 until GitLab answered its creation).
    func gitlabDeploymentID(_ id: Int64) async throws -> Int64 {
        try await store.read { db in try Int64.fetchOne(db, sql: "SELECT remote_id FROM gitlab_deployment WHERE id = ?", arguments: [id]) ?? 0 }
    }
}
