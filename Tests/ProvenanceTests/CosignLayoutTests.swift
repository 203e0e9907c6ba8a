import Foundation
import Provenance
import Testing

/// Byte-for-byte against a real `cosign sign` trace (PUT of `sha256-4c1c50d0….sig`, payload
/// 252 bytes, signature `MEYCIQCP…`): the signature manifest, config and payload Relay
/// serves are what cosign writes. The trace's config carries a creation time (cosign 1.x);
/// cosign ≥ 2.2.4 leaves it zero, as Relay does, so only that value (and with it the
/// config's size and digest) differ.
@Suite struct CosignLayoutTests {
    static let signedManifest = "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d"
    static let signature = "MEYCIQCPH7NJAIfrB6BZN91dV0o7l/i11muXrvrAh100jDMMhAIhAPsLH0oXb2OPITXRpWBMUd3vHtz5Ks5pql2Hr6t/IJXw"
    static let payloadDigest = "sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc"
    static let traceConfig = #"{"architecture":"","created":"2023-02-17T09:25:33.91047962-08:00","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc"]},"config":{}}"#
    static let traceManifest = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":247,"digest":"sha256:85ad8e17d3d7c00664855c638832bd99f32d42542c2d587851410a45a7f60b95"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":252,"digest":"sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc","annotations":{"dev.cosignproject.cosign/signature":"MEYCIQCPH7NJAIfrB6BZN91dV0o7l/i11muXrvrAh100jDMMhAIhAPsLH0oXb2OPITXRpWBMUd3vHtz5Ks5pql2Hr6t/IJXw"}}]}"#

    @Test func signatureManifestConfigAndPayloadAreCosignsBytes() {
        let cosign = CosignSignature(
            payload: CosignSignature.payload(manifestDigest: Self.signedManifest, dockerReference: "index.docker.io/chihjenhuang/cosign1"),
            signature: Self.signature)
        #expect(cosign.payloadDigest == Self.payloadDigest)
        #expect(OCIManifest.digest(of: Data(Self.traceConfig.utf8)) == "sha256:85ad8e17d3d7c00664855c638832bd99f32d42542c2d587851410a45a7f60b95")
        let config = Self.traceConfig.replacingOccurrences(of: "2023-02-17T09:25:33.91047962-08:00", with: "0001-01-01T00:00:00Z")
        #expect(String(decoding: cosign.configBytes, as: UTF8.self) == config)
        let manifest = Self.traceManifest
            .replacingOccurrences(of: "\"size\":247", with: "\"size\":\(config.utf8.count)")
            .replacingOccurrences(of: "sha256:85ad8e17d3d7c00664855c638832bd99f32d42542c2d587851410a45a7f60b95",
                                  with: OCIManifest.digest(of: Data(config.utf8)))
        #expect(String(decoding: cosign.manifestBytes, as: UTF8.self) == manifest)
        #expect(CosignSignature.tag(forManifest: Self.signedManifest) == "sha256-4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d.sig")
    }
}
