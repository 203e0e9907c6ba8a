/// The version of the relay ⇄ agent protocol.
///
/// The tunnel itself (issue #3) negotiates this at connect time; a peer whose major version
/// differs is refused with a message that names both versions rather than a decode failure.
public struct ProtocolVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// The version this build speaks.
    public static let current = ProtocolVersion(major: 1, minor: 1)

    /// The first version whose agents understand `Artifact.oci` (Helm charts and OCI
    /// artifacts): an older agent would serve such an artifact as a Git tarball.
    public static let ociArtifacts = ProtocolVersion(major: 1, minor: 1)

    /// Two peers can talk when their major versions match; minor versions only add fields.
    public func isCompatible(with other: ProtocolVersion) -> Bool {
        major == other.major
    }

    public static func < (lhs: ProtocolVersion, rhs: ProtocolVersion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }

    public var description: String { "\(major).\(minor)" }

    /// Parses `"<major>.<minor>"`; returns nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]),
              major >= 0, minor >= 0 else { return nil }
        self.init(major: major, minor: minor)
    }
}
