import Foundation
import Logging
import Synchronization
import Wire

/// Follows Flux objects with list + watch (resourceVersion, bookmarks; 410 Gone or a dropped
/// watch → list again) and journals each object's reduced state when it changes.
public final class FluxStatusWatcher: Sendable {
    public struct Kind: Sendable {
        public var resource: KubeResource
        public init(_ resource: KubeResource) { self.resource = resource }
    }

    public static let kustomization = KubeResource(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", kind: "Kustomization")
    public static let helmRelease = KubeResource(group: "helm.toolkit.fluxcd.io", version: "v2", plural: "helmreleases", kind: "HelmRelease")
    public static let gitRepository = KubeResource(group: "source.toolkit.fluxcd.io", version: "v1", plural: "gitrepositories", kind: "GitRepository")
    public static let watched: [KubeResource] = [kustomization, helmRelease, .ociRepository, .externalArtifact, gitRepository]

    let client: KubeClient
    let journal: StatusJournal
    let namespaces: [String]?
    let resources: [KubeResource]
    let logger: Logger
    /// Which relay source a Flux object consumes: (kind, namespace, name) of the object, and
    /// the OCIRepository URLs seen, give the source name or "".
    let resolveSource: @Sendable (_ kind: String, _ object: FluxObject, _ ociURLs: [String: String]) -> String
    /// The last state journaled per object ("Kind/namespace/name").
    private let last = Mutex<[String: Relay_V1_ObjectState]>([:])
    /// The last object seen per key, to recompute its source when what it depends on changes.
    private let objects = Mutex<[String: (KubeResource, FluxObject)]>([:])
    /// OCIRepository "namespace/name" → spec.url, for resolving Kustomization sources.
    private let ociURLs = Mutex<[String: String]>([:])

    public init(client: KubeClient, journal: StatusJournal, namespaces: [String]?, resources: [KubeResource] = FluxStatusWatcher.watched,
                logger: Logger, resolveSource: @escaping @Sendable (String, FluxObject, [String: String]) -> String) {
        self.client = client
        self.journal = journal
        self.namespaces = namespaces
        self.resources = resources
        self.logger = logger
        self.resolveSource = resolveSource
    }

    /// Watches every kind in every namespace until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for resource in resources {
                for namespace in namespaces.map({ $0.map(Optional.some) }) ?? [nil] {
                    group.addTask { await self.follow(resource, namespace: namespace) }
                }
            }
        }
    }

    private func key(_ kind: String, _ object: FluxObject) -> String {
        "\(kind)/\(object.metadata.namespace ?? "")/\(object.metadata.name)"
    }

    /// list → watch → (410 or end) → list …, with backoff on errors.
    func follow(_ resource: KubeResource, namespace: String?) async {
        var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(30))
        var missingCRDLogged = false
        while !Task.isCancelled {
            do {
                let (items, listedVersion) = try await client.listWithVersion(resource, namespace: namespace, as: FluxObject.self)
                missingCRDLogged = false
                try observeList(resource, namespace: namespace, items: items)
                var version = listedVersion
                var relist = false
                var dropped = 0
                while !relist, !Task.isCancelled {
                    do {
                        try await client.watch(resource, namespace: namespace, resourceVersion: version, as: FluxObject.self) { event in
                            if let rv = event.resourceVersion { version = rv }
                            switch event.type {
                            case .added, .modified:
                                if let object = event.object { try self.observe(resource, object, deleted: false) }
                            case .deleted:
                                if let object = event.object { try self.observe(resource, object, deleted: true) }
                            case .bookmark:
                                break
                            case .error:
                                if event.code == 410 {
                                    self.logger.info("watch expired (410 Gone); listing again", metadata: ["resource": "\(resource.plural)"])
                                } else {
                                    self.logger.warning("watch error; listing again", metadata: ["resource": "\(resource.plural)", "error": "\(event.message ?? "")"])
                                }
                                relist = true
                            }
                        }
                        dropped = 0
                    } catch let error as KubeError where error.code != nil {
                        throw error  // an API answer (404, 401, …): handled below
                    } catch {
                        // A dropped connection: watch again from where we were, as client-go
                        // does; list again only if that keeps failing.
                        dropped += 1
                        if dropped >= 3 || Task.isCancelled { throw error }
                        try await Task.sleep(for: .milliseconds(200 * dropped))
                    }
                    backoff.reset()
                }
            } catch let error as KubeError where error.code == 404 {
                // This Flux kind is not installed (e.g. no helm-controller): look again later.
                if !missingCRDLogged {
                    logger.info("Flux kind not installed; will look again", metadata: ["resource": "\(resource.plural)"])
                    missingCRDLogged = true
                }
                try? await Task.sleep(for: .seconds(60))
                continue
            } catch {
                if Task.isCancelled { return }
                let delay = backoff.next()
                logger.warning("watching Flux objects failed; retrying", metadata: [
                    "resource": "\(resource.plural)", "error": "\(error)", "in_ms": "\(delay.milliseconds)"])
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// A full list: every object's state, and a deletion for those that are gone.
    func observeList(_ resource: KubeResource, namespace: String?, items: [FluxObject]) throws {
        let present = Set(items.map { key(resource.kind, $0) })
        let prefix = "\(resource.kind)/"
        let gone = last.withLock { last in
            last.filter { $0.key.hasPrefix(prefix) && !present.contains($0.key) && (namespace == nil || $0.value.namespace == namespace) }
        }
        for item in items { try observe(resource, item, deleted: false) }
        for (key, state) in gone {
            var deleted = state
            deleted.state = "deleted"
            try journal.append([.object(deleted)])
            last.withLock { _ = $0.removeValue(forKey: key) }
        }
    }

    func observe(_ resource: KubeResource, _ object: FluxObject, deleted: Bool) throws {
        if resource == .ociRepository {
            let id = "\(object.metadata.namespace ?? "")/\(object.metadata.name)"
            ociURLs.withLock { $0[id] = deleted ? nil : object.spec?.url }
        }
        let urls = ociURLs.withLock { $0 }
        var state = FluxStatusReducer.reduce(object, kind: resource.kind, apiVersion: resource.apiVersion,
                                             source: resolveSource(resource.kind, object, urls))
        if deleted { state.state = "deleted" }
        let id = key(resource.kind, object)
        objects.withLock { $0[id] = deleted ? nil : (resource, object) }
        let changed = last.withLock { last -> Bool in
            guard last[id] != state else { return false }
            last[id] = deleted ? nil : state
            return true
        }
        if changed { try journal.append([.object(state)]) }
        // A new OCIRepository URL can change which source other objects consume.
        if resource == .ociRepository { try refreshSources() }
    }

    /// Recomputes every object's source (after a publication or an OCIRepository change)
    /// and journals the states whose source changed.
    public func refreshSources() throws {
        let urls = ociURLs.withLock { $0 }
        for (id, (resource, object)) in objects.withLock({ $0 }) {
            let source = resolveSource(resource.kind, object, urls)
            let update = last.withLock { last -> Relay_V1_ObjectState? in
                guard var state = last[id], state.source != source else { return nil }
                state.source = source
                last[id] = state
                return state
            }
            if let update { try journal.append([.object(update)]) }
        }
    }
}
