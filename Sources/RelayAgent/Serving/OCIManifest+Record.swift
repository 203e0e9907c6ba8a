import ArtifactMirror
import Foundation
@_exported import Provenance

extension OCIManifest {
    /// The manifest served for a stored artifact: the relay computes the same from the
    /// DesiredState entry (or bundle statement) it signed.
    public init(record: ArtifactRecord) {
        if let oci = record.oci {
            self.init(bytes: oci.manifest, mediaType: oci.mediaType)
            return
        }
        self.init(revision: record.revision, origin: record.origin ?? record.source, digest: record.digest, size: record.size,
                  created: record.packagedAt ?? record.createdAt)
    }
}
