import ArtifactMirror
import Wire

/// relay-agent: dials the relay, receives and verifies artifacts and serves them to Flux.
///
/// It reuses `ArtifactMirror`'s store and tarball verification; the tunnel client and the
/// Flux-facing endpoints arrive with issues #3 and #4.
public enum RelayAgentInfo {
    public static let protocolVersion = ProtocolVersion.current
}
