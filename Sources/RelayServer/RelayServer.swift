import ArtifactMirror
import Wire

/// relay-server: mirrors Git sources, packages revisions and pushes them to agents.
///
/// Only the packaging half exists so far (see `ArtifactMirror`); the tunnel, registry and
/// status feed arrive with issues #3–#5.
public enum RelayServerInfo {
    public static let protocolVersion = ProtocolVersion.current
}
