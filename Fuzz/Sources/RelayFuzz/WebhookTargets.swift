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

/// `POST /flux/events` bodies (notification-controller's generic and generic-hmac providers).
///
/// Invariants: an accepted event has a kind and a name, a message of at most 4096 characters,
/// and survives the protobuf round trip it takes through the status journal and the tunnel;
/// its timestamp, written back as RFC 3339, reads as the same millisecond.
enum FluxEventTarget {
    static func run(_ input: Data) {
        guard let event = try? FluxEventReceiver.event(from: input) else { return }
        require(!event.kind.isEmpty && !event.name.isEmpty, "event without kind or name accepted")
        require(event.message.count <= 4096, "message of \(event.message.count) characters kept")
        if event.timestampUnixMs != 0 {
            // RFC3339 reads back what it writes.
            let date = Date(timeIntervalSince1970: Double(event.timestampUnixMs) / 1000)
            let again = RFC3339.parse(RFC3339.format(date, milliseconds: true)).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
            require(again == event.timestampUnixMs, "\(event.timestampUnixMs) ms reads back as \(again.map(String.init) ?? "nothing")")
        }
        let entry = Relay_V1_StatusEntry.with { $0.sequence = 1; $0.event = event }
        let bytes: Data
        do { bytes = try entry.serializedBytes() } catch { fatalError("event does not serialize: \(error)") }
        let back = try? Relay_V1_StatusEntry(serializedBytes: bytes)
        require(back == entry, "event changed in the protobuf round trip")
    }
}

/// Kubernetes watch lines for Flux objects (`KubeClient.decodeWatchLine` + `FluxObject`) and the
/// state the agent reduces each object to (`FluxStatusReducer`).
///
/// Input: a watch stream, one JSON event per line.
///
/// Invariants: every decoded object reduces, for every kind, to one of the documented states
/// with a message of at most 2048 characters; ADDED/MODIFIED/DELETED carry an object and
/// BOOKMARK/ERROR none.
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
                require(state.message.count <= 2048, "message of \(state.message.count) characters")
                require(state.name == object.metadata.name, "name changed")
                _ = try? state.serializedBytes() as Data
            }
        }
    }
}
