import AsyncHTTPClient
import Foundation
import Logging
import NIOCore

/// A GitLab project's deploy freeze periods (`GET /projects/:id/freeze_periods`), read on an
/// interval and kept in the registry, so a GitLab that is down leaves the last known periods
/// in force (GitLab itself only tells CI jobs; the relay enforces them for its agents).
public struct GitLabFreezePeriods: Sendable {
    let sources: [(name: String, gitlab: ResolvedServerConfig.GitLabTarget)]
    let registry: Registry
    let logger: Logger
    /// Called after periods were stored (the controller's poke).
    let changed: @Sendable () -> Void

    public init(config: ResolvedServerConfig, registry: Registry, logger: Logger, changed: @escaping @Sendable () -> Void) {
        sources = config.sources.compactMap { source in
            source.gitlab.flatMap { $0.freezePeriodsInterval != nil ? (source.name, $0) : nil }
        }
        self.registry = registry
        self.logger = logger
        self.changed = changed
    }

    public var isActive: Bool { !sources.isEmpty }

    public func run() async {
        guard isActive else { return }
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(20))
        configuration.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        await withDiscardingTaskGroup { group in
            for source in sources {
                group.addTask {
                    while !Task.isCancelled {
                        await read(source.name, source.gitlab, http: http)
                        try? await Task.sleep(for: source.gitlab.freezePeriodsInterval ?? .seconds(300))
                    }
                }
            }
        }
        try? await http.shutdown()
    }

    func read(_ source: String, _ gitlab: ResolvedServerConfig.GitLabTarget, http: HTTPClient) async {
        var request = HTTPClientRequest(url: "\(gitlab.projectAPI)/freeze_periods?per_page=100")
        request.headers.add(name: "PRIVATE-TOKEN", value: gitlab.token)
        request.headers.add(name: "User-Agent", value: "relay-server")
        do {
            let response = try await http.execute(request, timeout: .seconds(20))
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status.code == 200 else {
                logger.warning("cannot read the GitLab project's freeze periods; the last known stay in force", metadata: [
                    "source": "\(source)", "status": "\(response.status.code)", "answer": "\(String(buffer: body).prefix(200))"])
                return
            }
            let json = String(buffer: body)
            guard (try? JSONSerialization.jsonObject(with: Data(json.utf8))) is [Any] else {
                logger.warning("GitLab's freeze periods are not a JSON list; ignored", metadata: ["source": "\(source)"])
                return
            }
            let previous = try await registry.gitlabFreezes(source: source)
            try await registry.saveGitLabFreezes(source: source, json: json, readAt: Date())
            if previous?.json != json { changed() }
        } catch {
            logger.warning("cannot read the GitLab project's freeze periods; the last known stay in force", metadata: [
                "source": "\(source)", "error": "\(error)"])
        }
    }

    /// Freeze rules from the API's JSON (`freeze_start`, `freeze_end`, `cron_timezone`); a
    /// period the relay cannot read is skipped with a warning.
    static func rules(json: String, logger: Logger) -> [FreezeRule] {
        guard let list = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else { return [] }
        return list.compactMap { period in
            let id = period["id"].map { "\($0)" } ?? "?"
            guard let start = period["freeze_start"] as? String, let end = period["freeze_end"] as? String else { return nil }
            let zoneName = period["cron_timezone"] as? String ?? "UTC"
            do {
                guard let zone = TimeZone(identifier: zoneName) else { throw FreezePeriodError.zone(zoneName) }
                let window = FreezeWindow(start: try CronSchedule(start), end: try CronSchedule(end), timeZone: zone)
                return FreezeRule(name: "GitLab freeze period \(id)", window: window, agents: [], environments: [])
            } catch {
                logger.warning("skipping a GitLab freeze period the relay cannot read", metadata: ["id": "\(id)", "error": "\(error)"])
                return nil
            }
        }
    }

    enum FreezePeriodError: Error, CustomStringConvertible {
        case zone(String)
        var description: String {
            switch self { case .zone(let name): "cron_timezone '\(name)' is not an IANA time zone" }
        }
    }
}
