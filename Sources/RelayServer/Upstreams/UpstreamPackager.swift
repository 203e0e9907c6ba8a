import ArtifactMirror
import Foundation
import Logging
import Yams

/// Mirrors one Helm chart or OCI artifact source: resolves the version or tag, downloads
/// what is new, checks it (digests from the index, registry and manifest; a chart's
/// contents) and stores the large layer byte for byte in the relay's artifact store. The
/// result is a `PackagedArtifact` with its `OCIPayload`; the scheduler records and offers it
/// like a Git revision. What fails a check is deleted and never offered.
struct UpstreamPackager: Sendable {
    let store: ArtifactStore
    let maxArtifactBytes: UInt64
    let logger: Logger

    /// `current`: what the relay offers for this source now; an unchanged upstream returns it
    /// without downloading anything.
    func package(source: String, upstream: Upstream, current: PackagedArtifact?) async throws(UpstreamError) -> PackagedArtifact {
        let http = try UpstreamHTTP.make(access: upstream.access)
        defer { Task { await http.shutdown() } }
        switch upstream {
        case .helmRepository(let repository):
            return try await helmRepository(source: source, repository, http: http, current: current, origin: upstream.origin)
        case .helmRegistry(let registry, let chart, let version):
            let client = RegistryClient(http: http, upstream: registry, repository: "\(registry.repository)/\(chart)")
            let tag = try await chartTag(client, chart: chart, version: version)
            return try await registryArtifact(source: source, client: client, reference: tag, kind: .helm, tag: tag,
                                              current: current, origin: upstream.origin)
        case .oci(let registry, let reference):
            let client = RegistryClient(http: http, upstream: registry, repository: registry.repository)
            switch reference {
            case .tag(let tag):
                return try await registryArtifact(source: source, client: client, reference: tag, kind: .oci, tag: tag, current: current, origin: upstream.origin)
            case .digest(let digest):
                return try await registryArtifact(source: source, client: client, reference: digest, kind: .oci, tag: nil, current: current, origin: upstream.origin)
            case .semver(let constraint):
                let tags = try await client.tags()
                guard let best = SemVerTagSelector.highestTag(matching: constraint, among: tags) else {
                    throw UpstreamError(.notFound, "\(upstream.origin) has no tag in the range \(constraint.text) (among \(tags.count) tags)")
                }
                return try await registryArtifact(source: source, client: client, reference: best.tag, kind: .oci, tag: best.tag, current: current, origin: upstream.origin)
            }
        }
    }

    // MARK: - Helm HTTP repository

    private func helmRepository(source: String, _ repository: HelmRepositoryUpstream, http: UpstreamHTTP,
                                current: PackagedArtifact?, origin: String) async throws(UpstreamError) -> PackagedArtifact {
        let client = HelmRepositoryClient(http: http, upstream: repository)
        let entry = try await client.resolve()
        if let current, current.commit == entry.version, current.oci?.kind == .helm,
           let listed = entry.digest, current.digest == "sha256:" + listed.lowercased(), store.holdsFile(digest: current.digest, size: current.size) {
            return current
        }
        let reservation = try reserve()
        defer { reservation.release() }
        let path = reservation.path
        let (digest, _) = try await client.download(entry, to: path, limit: maxArtifactBytes)
        let chart = try checkedChart(path: path, digest: digest, chart: repository.chart, version: entry.version)
        let payload = try HelmChartLayout.payload(chart: chart, created: entry.created, version: entry.version)
        return try publish(path: path, source: source, revision: "\(entry.version)@\(digest)", commit: entry.version,
                           digest: digest, size: chart.size, files: chart.files, origin: origin, payload: payload)
    }

    // MARK: - OCI registries

    /// The tag of the wanted chart version (tags carry `_` for SemVer's `+`).
    private func chartTag(_ client: RegistryClient, chart: String, version: VersionChoice) async throws(UpstreamError) -> String {
        switch version {
        case .exact(let version): return OCIPayload.helmTag(forVersion: version)
        case .range(let constraint):
            let tags = try await client.tags()
            let versions = tags.map { $0.replacingOccurrences(of: "_", with: "+") }
            guard let best = SemVerTagSelector.highestTag(matching: constraint, among: versions) else {
                throw UpstreamError(.notFound, "the registry has no version of chart '\(chart)' in the range \(constraint.text) (among \(tags.count) tags)")
            }
            return OCIPayload.helmTag(forVersion: best.tag)
        }
    }

    private func registryArtifact(source: String, client: RegistryClient, reference: String, kind: OCIPayload.Kind, tag: String?,
                                  current: PackagedArtifact?, origin: String) async throws(UpstreamError) -> PackagedArtifact {
        let manifest = try await client.manifest(reference)
        let revision = "\(tag ?? "latest")@\(manifest.digest)"
        let signatures = try await publisherSignatures(client, of: manifest.digest, origin: origin)
        if let current, current.oci?.manifestDigest == manifest.digest, current.revision == revision,
           current.oci?.signatureLayers ?? [] == signatures, store.holdsFile(digest: current.digest, size: current.size) {
            return current
        }
        let parsed: OCIPayload.Manifest
        do { parsed = try OCIPayload.parseManifest(manifest.bytes, mediaType: manifest.mediaType) } catch {
            throw UpstreamError(.badResponse, "\(origin) \(reference): \(error)")
        }
        // The one large layer is fetched like an artifact; everything else travels inline.
        let layer: OCIPayload.Descriptor
        if kind == .helm {
            guard parsed.config.mediaType == OCIPayload.helmConfigMediaType,
                  let chartLayer = parsed.layers.first(where: { $0.mediaType == OCIPayload.helmChartMediaType || $0.mediaType == "application/tar+gzip" }) else {
                throw UpstreamError(.badResponse, "\(origin):\(reference) is not a Helm chart (config \(parsed.config.mediaType), no chart layer); use an oci source for other artifacts")
            }
            layer = chartLayer
        } else {
            let large = parsed.layers.filter { $0.size > UInt64(OCIPayload.maxInlineBlobBytes) }
            guard large.count <= 1, let first = large.first ?? parsed.layers.first else {
                throw UpstreamError(.refusedContent, parsed.layers.isEmpty ? "\(origin):\(reference) has no layers"
                    : "\(origin):\(reference) has \(large.count) layers over 1 MiB; Relay carries artifacts with one content layer (as `flux push artifact` makes)")
            }
            layer = first
        }
        // Everything but the large layer travels inline: bounded before anything is fetched.
        let small = ([parsed.config] + parsed.layers).filter { $0.digest != layer.digest }
        let total = Set(small.map(\.digest)).count <= 64 ? small.reduce(UInt64(0)) { $0 + $1.size } : .max
        guard total <= UInt64(OCIPayload.maxInlineTotalBytes) else {
            throw UpstreamError(.tooLarge, "\(origin):\(reference): the config and small layers add up to more than \(OCIPayload.maxInlineTotalBytes) bytes (or more than 64 blobs); Relay carries artifacts with one content layer")
        }
        var blobs: [String: Data] = [:]
        for descriptor in small where blobs[descriptor.digest] == nil {
            blobs[descriptor.digest] = try await client.blob(descriptor)
        }
        let reservation = try reserve()
        defer { reservation.release() }
        let path = reservation.path
        try await client.download(layer, to: path, limit: maxArtifactBytes)
        var files = 0
        if kind == .helm {
            let version = tag.map { $0.replacingOccurrences(of: "_", with: "+") } ?? ""
            files = try checkedChart(path: path, digest: layer.digest, chart: nil, version: version).files
        } else if layer.mediaType.hasSuffix("tar+gzip") {
            let report: VerificationReport
            do { report = try TarballVerifier(expectedDigest: layer.digest).verify(file: path) } catch {
                throw UpstreamError(.refusedContent, "\(origin):\(reference): \(error)")
            }
            guard report.ok else {
                throw UpstreamError(.refusedContent, "\(origin):\(reference): the layer breaks Flux's unpack rules: \(report.errors.prefix(3).joined(separator: "; "))")
            }
            files = report.files
        }
        let payload = OCIPayload(kind: kind, manifest: manifest.bytes, mediaType: manifest.mediaType, blobs: blobs, tags: tag.map { [$0] } ?? [],
                                 signatureLayers: signatures)
        return try publish(path: path, source: source, revision: revision, commit: manifest.digest, digest: layer.digest, size: layer.size,
                           files: files, origin: origin, payload: payload)
    }

    /// The publisher's cosign signatures of `digest` (the upstream's `sha256-<hex>.sig`
    /// image), so that `OCIRepository.spec.verify` with the publisher's key still works at the
    /// agent. None when the upstream has no such tag.
    private func publisherSignatures(_ client: RegistryClient, of digest: String, origin: String) async throws(UpstreamError) -> [OCIPayload.SignatureLayer] {
        // Optional: a signature image Relay cannot use is logged and left out, never a reason
        // not to mirror the artifact (the relay's own signature is always served).
        let tag = digest.replacingOccurrences(of: "sha256:", with: "sha256-") + ".sig"
        do {
            guard let image = try await client.manifestIfPresent(tag) else { return [] }
            let parsed = try OCIPayload.parseManifest(image.bytes, mediaType: image.mediaType)
            let usable = parsed.layers.filter { $0.mediaType == OCIPayload.simpleSigningMediaType && $0.size <= UInt64(OCIPayload.maxSignatureLayerBytes) }
            if usable.count > OCIPayload.maxSignatureLayers || usable.count < parsed.layers.count {
                logger.warning("the publisher's signature image has layers Relay does not carry; the newest usable ones are mirrored", metadata: [
                    "upstream": "\(origin)", "tag": "\(tag)", "layers": "\(parsed.layers.count)", "kept": "\(min(usable.count, OCIPayload.maxSignatureLayers))"])
            }
            var result: [OCIPayload.SignatureLayer] = []
            for layer in usable.suffix(OCIPayload.maxSignatureLayers) {
                result.append(.init(mediaType: layer.mediaType, data: try await client.blob(layer), annotations: layer.annotations ?? [:]))
            }
            return result
        } catch let error as UpstreamError where error.code == .unauthorized || error.code == .unreachable {
            throw error
        } catch {
            logger.warning("the publisher's signature is not mirrored", metadata: ["upstream": "\(origin)", "tag": "\(tag)", "error": "\(error)"])
            return []
        }
    }

    // MARK: - Shared

    private func checkedChart(path: String, digest: String, chart: String?, version: String) throws(UpstreamError) -> ChartArchive {
        let archive: ChartArchive
        do { archive = try ChartArchive(file: path, expectedDigest: digest) } catch {
            throw UpstreamError(.refusedContent, "chart \(chart ?? "") \(version): \(error)")
        }
        // Chart.yaml must be the chart and version asked for (a repository serving another is inconsistent).
        let node = try UpstreamYAML.compose(String(decoding: archive.chartYAML, as: UTF8.self), what: "Chart.yaml")
        guard case .mapping(let meta) = node else { throw UpstreamError(.refusedContent, "Chart.yaml is not a YAML mapping") }
        let name = UpstreamYAML.text(meta["name"])
        if let chart, name != chart {
            throw UpstreamError(.refusedContent, "the archive for chart \(chart) \(version) holds chart '\(name ?? "?")'")
        }
        if !version.isEmpty, let found = UpstreamYAML.text(meta["version"]), SemanticVersion(lenient: found) != SemanticVersion(lenient: version) {
            throw UpstreamError(.refusedContent, "the archive for version \(version) holds version \(found)")
        }
        return archive
    }

    private func publish(path: String, source: String, revision: String, commit: String, digest: String, size: UInt64, files: Int,
                         origin: String, payload: OCIPayload) throws(UpstreamError) -> PackagedArtifact {
        do { try payload.validate(layerDigest: digest, layerSize: size) } catch {
            throw UpstreamError(.badResponse, "\(origin): \(error)")
        }
        let now = Date()
        let record = ArtifactRecord(source: "upstream:\(source)", revision: revision, commit: commit, digest: digest, size: size, files: files,
                                    skipped: [], ignoreKey: "", createdAt: now, lastUsedAt: now, origin: origin, oci: payload)
        do { _ = try store.publish(verifiedFile: path, record: record) } catch {
            throw UpstreamError(.unreachable, "cannot store \(digest): \(error)")
        }
        return PackagedArtifact(source: source, revision: revision, digest: digest, size: size, commit: commit, origin: origin,
                                createdAt: now, oci: payload)
    }

    private func reserve() throws(UpstreamError) -> TemporaryFileReservation {
        do { return try store.reserveTemporaryFile(prefix: "upstream") } catch {
            throw UpstreamError(.unreachable, "cannot create a temporary file in the store: \(error)")
        }
    }
}
