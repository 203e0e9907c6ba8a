@testable import RelayAgent
@testable import RelayServer
import Foundation
import RelayShared
import Wire

/// `POST /hooks/gitlab` bodies: `GitLabPushEvent` decoding, address normalization and the
/// choice of sources to package (against the sources of the fixture relay.yaml).
///
/// Invariants: a normalized URL keeps no credentials; the sources chosen are configured ones,
/// each at most once; a pinned-commit source is never chosen.
enum GitLabWebhookTarget {
    private static let sources = ConfigFixture.serverConfig.sources

    static func run(_ input: Data) {
        guard let event = try? JSONDecoder().decode(GitLabPushEvent.self, from: input) else { return }
        for url in event.urls {
            let normalized = GitLabPushEvent.normalize(url)
            // `scheme://user:password@host:port/path` → `host/path`: no credentials survive.
            if let scheme = url.range(of: "://"), url[scheme.upperBound...].contains("/") {
                let host = normalized.prefix { $0 != "/" }
                require(!host.contains("@"), "normalize(\(url.debugDescription)) kept credentials: \(normalized)")
            }
        }
        let chosen = event.matchingSources(sources)
        require(Set(chosen).count == chosen.count, "a source chosen twice: \(chosen)")
        for name in chosen {
            guard let source = sources.first(where: { $0.name == name }) else { fatalError("unknown source \(name) chosen") }
            if case .commit? = source.reference { fatalError("pinned source \(name) chosen for \(event.ref)") }
        }
    }
}

/// `POST /flux/events` bodies (notification-controller's generic and generic-hmac providers),
/// and the caps every status entry is cut to before it is journaled (`StatusEntryLimits`).
///
/// Invariants: an accepted event has a kind and a name; its timestamp, written back as
/// RFC 3339, reads as the same millisecond; the entry cut to the caps has every field, key,
/// value and the metadata total within them, is unchanged by cutting again (the relay cuts
/// what the agent already cut), and survives the protobuf round trip of journal and tunnel.
enum FluxEventTarget {
    static func run(_ input: Data) {
        guard let event = try? FluxEventReceiver.event(from: input) else { return }
        require(!event.kind.isEmpty && !event.name.isEmpty, "event without kind or name accepted")
        if event.timestampUnixMs != 0 {
            let date = Date(timeIntervalSince1970: Double(event.timestampUnixMs) / 1000)
            let again = RFC3339.parseMilliseconds(RFC3339.format(date, milliseconds: true))
            require(again == event.timestampUnixMs, "\(event.timestampUnixMs) ms reads back as \(again.map(String.init) ?? "nothing")")
        }
        let entry = StatusEntryLimits.clamped(Relay_V1_StatusEntry.with { $0.sequence = 1; $0.event = event })
        guard case .event(let cut)? = entry.kind else { fatalError("clamping lost the event") }
        checkCaps(cut)
        require(StatusEntryLimits.clamped(entry) == entry, "cutting twice changed the entry")
        let bytes: Data
        do { bytes = try entry.serializedBytes() } catch { fatalError("event does not serialize: \(error)") }
        require((try? Relay_V1_StatusEntry(serializedBytes: bytes)) == entry, "event changed in the protobuf round trip")
    }

    private static func checkCaps(_ event: Relay_V1_FluxEvent) {
        typealias Limits = StatusEntryLimits
        for field in [event.kind, event.namespace, event.name, event.severity, event.reason, event.revision, event.controller] {
            require(field.utf8.count <= Limits.fieldBytes, "a field of \(field.utf8.count) bytes")
        }
        require(event.message.utf8.count <= Limits.messageBytes, "a message of \(event.message.utf8.count) bytes")
        let metadata = event.metadata.filter { $0.key != Limits.truncatedKey }
        require(metadata.count <= Limits.metadataEntries, "\(metadata.count) metadata entries")
        require(metadata.allSatisfy { $0.key.utf8.count <= Limits.metadataKeyBytes && $0.value.utf8.count <= Limits.metadataValueBytes },
                "a metadata key or value over its cap")
        let total = metadata.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        require(total <= Limits.metadataBytes, "\(total) bytes of metadata")
        require((event.metadata[Limits.truncatedKey]?.utf8.count ?? 0) <= Limits.fieldBytes, "a long truncation note")
    }
}

/// Kubernetes watch lines for Flux objects (`KubeClient.decodeWatchLine` + `FluxObject`) and the
/// state the agent reduces each object to (`FluxStatusReducer`).
///
/// Input: a watch stream, one JSON event per line.
///
/// Invariants: every decoded object reduces, for every kind, to one of the documented states,
/// which the status caps cut to size once and for all; ADDED/MODIFIED/DELETED carry an object
/// and BOOKMARK/ERROR none.
enum FluxStatusTarget {
    private static let states: Set<String> = ["suspended", "terminating", "progressing", "failed", "ready", "failing", "unknown"]
    private static let kinds = ["GitRepository", "OCIRepository", "Kustomization", "HelmRelease", "ExternalArtifact"]

    static func run(_ input: Data) {
        for line in Array(input).split(separator: UInt8(ascii: "\n")).prefix(8) {
            guard let event = try? KubeClient.decodeWatchLine(Data(line), as: FluxObject.self) else { continue }
            switch event.type {
            case .added, .modified, .deleted: require(event.object != nil, "\(event.type) without an object")
            case .bookmark, .error: require(event.object == nil, "\(event.type) with an object")
            }
            guard let object = event.object else { continue }
            for kind in kinds {
                let state = FluxStatusReducer.reduce(object, kind: kind, apiVersion: object.apiVersion ?? "", source: "fuzz")
                require(states.contains(state.state), "state \(state.state) for \(kind)")
                require(state.name == object.metadata.name, "name changed")
                let entry = StatusEntryLimits.clamped(Relay_V1_StatusEntry.with { $0.sequence = 1; $0.object = state })
                guard case .object(let cut)? = entry.kind else { fatalError("clamping lost the object") }
                require(cut.message.utf8.count <= StatusEntryLimits.messageBytes && cut.name.utf8.count <= StatusEntryLimits.fieldBytes
                        && cut.reason.utf8.count <= StatusEntryLimits.fieldBytes, "an object state over the caps")
                require(StatusEntryLimits.clamped(entry) == entry, "cutting twice changed the object state")
            }
        }
    }
}
