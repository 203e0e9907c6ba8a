import Foundation
import Testing

/// The agent's Flux-facing endpoint, pulled by OCI clients nobody here wrote (skopeo from
/// Debian, oras-py from PyPI) and by curl, with a real relay and agent on loopback.
@Suite struct FluxOCITests {
    /// The Accept header go-containerregistry sends for manifests (spec §4.2).
    static let fluxAccept = "Accept: application/vnd.docker.distribution.manifest.v1+json,application/vnd.docker.distribution.manifest.v1+prettyjws,application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json"

    struct Setup {
        let dir: TemporaryDirectory
        let repo: TestRepo
        let harness: RelayHarness
        let port: Int
        var base: String { "http://127.0.0.1:\(port)" }
        func published() throws -> [RelayHarness.Published] { try harness.published("edge") }
    }

    /// A relay and one agent serving Flux, holding the first artifact of `podinfo`.
    static func start(_ prefix: String, fluxYAML: String = "") throws -> Setup {
        let dir = try TemporaryDirectory(prefix: prefix)
        let repo = try TestRepo.create(at: dir.appending("podinfo"))
        try repo.write("apps/podinfo/deployment.yaml", "kind: Deployment\nmetadata: {name: podinfo}\n")
        try repo.write("apps/podinfo/kustomization.yaml", "resources: [deployment.yaml]\n")
        try repo.write("scripts/check.sh", "#!/bin/sh\necho ok\n", executable: true)
        try repo.write("README.md", "podinfo\n")
        try repo.symlink("current", target: "apps/podinfo")
        _ = try repo.commit("initial")
        let harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo"])], dir: dir)
        let port = try harness.serveFlux("edge", yaml: fluxYAML)
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact") { try !harness.published("edge").isEmpty }
        try harness.waitUntil("flux endpoint ready") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        return Setup(dir: dir, repo: repo, harness: harness, port: port)
    }

    /// Regular files of a commit with their blob ids (what Flux's untar must reproduce;
    /// symlinks are dropped by Flux).
    static func expectedFiles(_ repo: TestRepo, _ commit: String) throws -> [String: String] {
        var files: [String: String] = [:]
        for line in try repo.git(["ls-tree", "-r", commit]).split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            let meta = parts[0].split(separator: " ")
            guard meta[0] == "100644" || meta[0] == "100755" else { continue }
            files[String(parts[1])] = String(meta[2])
        }
        return files
    }

    static func fixture(_ path: String) -> String {
        InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/\(path)").path
    }

    @Test func skopeoAndOrasPullTheArtifactAndFluxUntarReproducesTheCommit() throws {
        let setup = try Self.start("flux-oci")
        defer { setup.harness.shutdown(); setup.dir.remove() }
        let artifact = try #require(try setup.published().first)
        let commit = try setup.repo.head()
        let storeFile = setup.dir.appending("agent-edge/store/artifacts/sha256/\(artifact.digest.dropFirst(7)).tar.gz")
        let artifactBytes = try Data(contentsOf: storeFile)

        // HEAD by tag: the headers go-containerregistry's remote.Head requires.
        let head = try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/main", method: "HEAD", headers: [Self.fluxAccept])
        #expect(head.status == 200)
        #expect(head.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json")
        let manifestDigest = try #require(head.headers["docker-content-digest"])
        let get = try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/main", headers: [Self.fluxAccept])
        #expect(get.status == 200)
        #expect(head.headers["content-length"] == String(get.body.count))
        #expect(get.sha256 == manifestDigest)
        // The manifest as `flux push artifact` makes it (spec §4.1).
        let manifest = try #require(get.json)
        #expect(manifest["schemaVersion"] as? Int == 2)
        #expect(manifest["mediaType"] as? String == "application/vnd.oci.image.manifest.v1+json")
        #expect((manifest["config"] as? [String: Any])?["mediaType"] as? String == "application/vnd.cncf.flux.config.v1+json")
        let layers = try #require(manifest["layers"] as? [[String: Any]])
        #expect(layers.count == 1)
        #expect(layers[0]["mediaType"] as? String == "application/vnd.cncf.flux.content.v1.tar+gzip")
        #expect(layers[0]["digest"] as? String == artifact.digest)
        #expect(layers[0]["size"] as? Int == artifactBytes.count)
        let annotations = try #require(manifest["annotations"] as? [String: String])
        #expect(annotations["org.opencontainers.image.revision"] == "main@sha1:\(commit)")
        #expect(annotations["org.opencontainers.image.source"] == setup.repo.url.path)
        #expect(annotations["org.opencontainers.image.created"]?.hasSuffix("Z") == true)
        #expect(String(decoding: get.body, as: UTF8.self).hasPrefix(#"{"schemaVersion":2,"mediaType":"#))
        // The same manifest by digest, by `latest` and by the short commit: identical bytes.
        for reference in [manifestDigest, "latest", String(commit.prefix(7))] {
            #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/\(reference)").body == get.body, "\(reference)")
        }
        // Blob HEAD: exact size and digest.
        let blobHead = try HTTPProbe.request("\(setup.base)/v2/podinfo/blobs/\(artifact.digest)", method: "HEAD")
        #expect(blobHead.status == 200)
        #expect(blobHead.headers["content-length"] == String(artifactBytes.count))
        #expect(blobHead.headers["docker-content-digest"] == artifact.digest)

        // skopeo (containers/image): raw manifest, tags, and a full copy.
        let skopeo = try #require(findExecutable("skopeo"), "skopeo is installed by scripts/setup.sh")
        let reference = "docker://127.0.0.1:\(setup.port)/podinfo:main"
        let raw = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", reference])
        #expect(Data(raw.stdout.utf8) == get.body)
        let tagsOut = try runProcess(skopeo, ["list-tags", "--tls-verify=false", "docker://127.0.0.1:\(setup.port)/podinfo"])
        let tags = try #require(try JSONSerialization.jsonObject(with: Data(tagsOut.stdout.utf8)) as? [String: Any])["Tags"] as? [String]
        // The revision's tags, and the relay's cosign signature of the manifest.
        #expect(Set(tags ?? []) == ["latest", "main", String(commit.prefix(7)), "sha256-\(manifestDigest.dropFirst(7)).sig"])
        let copied = setup.dir.appending("skopeo-copy")
        _ = try runProcess(skopeo, ["copy", "--src-tls-verify=false", reference, "dir:\(copied.path)"], timeout: 120)
        let layerCopy = try Data(contentsOf: copied.appendingPathComponent(String(artifact.digest.dropFirst(7))))
        #expect(layerCopy == artifactBytes)

        // oras-py: manifest, pull of the layer, tags.
        let python = try InteropTests.python()
        let orasOut = setup.dir.appending("oras-pull")
        let oras = try runProcess(python, [Self.fixture("oci/oras_pull.py"), "127.0.0.1:\(setup.port)", "podinfo", "main", orasOut.path], timeout: 120)
        let orasReport = try #require(try JSONSerialization.jsonObject(with: Data(oras.stdout.utf8)) as? [String: Any])
        let orasFiles = try #require(orasReport["files"] as? [String])
        #expect(orasFiles.count == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: orasFiles[0])) == artifactBytes)
        #expect(Set(orasReport["tags"] as? [String] ?? []) == Set(tags ?? []))
        #expect(((orasReport["manifest"] as? [String: Any])?["layers"] as? [[String: Any]])?.first?["digest"] as? String == artifact.digest)

        // Flux's untar rules on the pulled layer give exactly the commit's files.
        let unpacked = setup.dir.appending("unpacked")
        let untar = try runProcess(python, [Self.fixture("oci/flux_untar.py"), copied.appendingPathComponent(String(artifact.digest.dropFirst(7))).path, unpacked.path])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(untar.stdout.utf8)) as? [String: Any])
        #expect(report["errors"] as? [String] == [])
        #expect(report["files"] as? [String: String] == (try Self.expectedFiles(setup.repo, commit)))
        #expect(FileManager.default.isExecutableFile(atPath: unpacked.appendingPathComponent("scripts/check.sh").path))

        // A new commit: `main` and `latest` move, the old manifest stays pullable by digest.
        try setup.repo.write("apps/podinfo/service.yaml", "kind: Service\n")
        let second = try setup.repo.commit("second")
        try setup.harness.pushWebhook(source: setup.harness.sources[0])
        try setup.harness.waitUntil("second revision served") {
            try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/main", method: "HEAD").headers["docker-content-digest"] != manifestDigest
        }
        let moved = try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/latest").json
        #expect((moved?["annotations"] as? [String: String])?["org.opencontainers.image.revision"] == "main@sha1:\(second)")
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/\(manifestDigest)").status == 200)
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/\(commit.prefix(7))").sha256 == manifestDigest)
        #expect(try HTTPProbe.request("\(setup.base)/artifacts/sha256/\(artifact.digest.dropFirst(7)).tar.gz").body == artifactBytes)
    }

    @Test func badRequestsGetTheRightOCIErrorAndNothingOutsideTheStore() throws {
        let setup = try Self.start("flux-bad")
        defer { setup.harness.shutdown(); setup.dir.remove() }
        let artifact = try #require(try setup.published().first)
        let base = setup.base
        func expect(_ path: String, _ status: Int, _ code: String?, method: String = "GET", sourceLocation: SourceLocation = #_sourceLocation) throws {
            let answer = try HTTPProbe.request(base + path, method: method)
            #expect(answer.status == status, "\(method) \(path): \(answer.status) \(answer.text)", sourceLocation: sourceLocation)
            if let code { #expect(answer.ociErrorCode == code, "\(path): \(answer.text)", sourceLocation: sourceLocation) }
            #expect(!answer.text.contains("root:"), "\(path) leaked a file", sourceLocation: sourceLocation)
        }
        try expect("/v2/nope/manifests/latest", 404, "NAME_UNKNOWN")
        try expect("/v2/nope/tags/list", 404, "NAME_UNKNOWN")
        try expect("/v2/Podinfo/manifests/latest", 400, "NAME_INVALID")
        try expect("/v2/podinfo/manifests/nope", 404, "MANIFEST_UNKNOWN")
        try expect("/v2/podinfo/manifests/sha256:\(String(repeating: "0", count: 64))", 404, "MANIFEST_UNKNOWN")
        try expect("/v2/podinfo/manifests/sha256:abc", 400, "DIGEST_INVALID")
        try expect("/v2/podinfo/manifests/-bad-tag", 400, "TAG_INVALID")
        try expect("/v2/podinfo/blobs/sha256:ABC", 400, "DIGEST_INVALID")
        try expect("/v2/podinfo/blobs/sha256:\(String(repeating: "e", count: 64))", 404, "BLOB_UNKNOWN")
        // Path traversal, raw and percent-encoded, through names, digests and artifact URLs.
        try expect("/v2/../../../../etc/passwd/manifests/latest", 400, "NAME_INVALID")
        try expect("/v2/podinfo/../../etc/passwd/manifests/latest", 400, "NAME_INVALID")
        try expect("/v2/%2e%2e/%2e%2e/etc/manifests/latest", 400, "NAME_INVALID")
        try expect("/v2/podinfo/blobs/sha256:../../../../../etc/passwd", 400, "DIGEST_INVALID")
        try expect("/v2/podinfo/blobs/sha256:%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400, "DIGEST_INVALID")
        try expect("/artifacts/sha256/../../../../../../etc/passwd", 404, nil)
        try expect("/artifacts/sha256/..%2f..%2f..%2fetc%2fpasswd.tar.gz", 404, nil)
        try expect("/artifacts/sha256/\(String(repeating: "0", count: 64)).tar.gz", 404, nil)
        try expect("/artifacts/../store/index", 404, nil)
        // Tag lists: huge, negative and non-numeric `n`; a valid page links to the next.
        for n in ["99999999999999999999999999", "-1", "ten", "10001"] {
            try expect("/v2/podinfo/tags/list?n=\(n)", 400, "PAGINATION_NUMBER_INVALID")
        }
        let page = try HTTPProbe.request("\(base)/v2/podinfo/tags/list?n=1")
        #expect(page.status == 200)
        #expect((page.json?["tags"] as? [String])?.count == 1)
        #expect(page.headers["link"]?.contains("rel=\"next\"") == true)
        // The registry is read-only.
        try expect("/v2/podinfo/blobs/uploads/", 405, "UNSUPPORTED", method: "POST")
        try expect("/v2/podinfo/manifests/latest", 405, "UNSUPPORTED", method: "PUT")
        try expect("/v2/podinfo/manifests/latest", 405, "UNSUPPORTED", method: "DELETE")

        // Artifact URLs (spec §3.4): exact bytes, Content-Length, never Content-Encoding.
        let hex = artifact.digest.dropFirst(7)
        let bytes = try HTTPProbe.request("\(base)/artifacts/sha256/\(hex).tar.gz", headers: ["Accept-Encoding: gzip"])
        #expect(bytes.status == 200)
        #expect(bytes.sha256 == artifact.digest)
        #expect(bytes.headers["content-length"] == String(artifact.size))
        #expect(bytes.headers["content-encoding"] == nil)
        let head = try HTTPProbe.request("\(base)/artifacts/sha256/\(hex).tar.gz", method: "HEAD")
        #expect(head.status == 200 && head.headers["content-length"] == String(artifact.size))

        // Still alive and serving after all that.
        #expect(try HTTPProbe.request("\(base)/healthz").status == 200)
        #expect(try HTTPProbe.request("\(base)/v2/podinfo/manifests/latest").status == 200)
    }

    @Test(arguments: ["basic", "bearer"])
    func pullAuthenticationWorksWithSkopeoAndRefusesWrongCredentials(mode: String) throws {
        let dir = try TemporaryDirectory(prefix: "flux-auth-pw")
        defer { dir.remove() }
        try Data("s3cret\n".utf8).write(to: dir.appending("pull-password"))
        let setup = try Self.start("flux-auth", fluxYAML: """
            flux:
              oci:
                auth: {type: \(mode), username: flux, passwordFile: \(dir.appending("pull-password").path)}

            """)
        defer { setup.harness.shutdown(); setup.dir.remove() }
        let ping = try HTTPProbe.request("\(setup.base)/v2/")
        #expect(ping.status == 401)
        #expect(ping.headers["www-authenticate"]?.hasPrefix(mode == "basic" ? "Basic realm=" : "Bearer realm=\"http://127.0.0.1:\(setup.port)/v2/token\",service=") == true,
                "\(ping.headers)")
        #expect(try HTTPProbe.request("\(setup.base)/v2/podinfo/manifests/latest").status == 401)
        // Artifact URLs stay anonymous (kustomize-controller sends no credentials).
        let artifact = try #require(try setup.published().first)
        #expect(try HTTPProbe.request("\(setup.base)/artifacts/sha256/\(artifact.digest.dropFirst(7)).tar.gz", method: "HEAD").status == 200)

        let skopeo = try #require(findExecutable("skopeo"))
        let reference = "docker://127.0.0.1:\(setup.port)/podinfo:latest"
        let good = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "--creds", "flux:s3cret", reference], allowFailure: true)
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains(artifact.digest))
        let bad = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "--creds", "flux:wrong", reference], allowFailure: true)
        #expect(bad.status != 0)
        #expect(bad.stderr.lowercased().contains("unauthorized") || bad.stderr.contains("401"), "\(bad.stderr)")
        let none = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "--no-creds", reference], allowFailure: true)
        #expect(none.status != 0)
    }

    @Test func theEndpointServesHTTPSWhenGivenACertificate() throws {
        let probeDir = try TemporaryDirectory(prefix: "flux-tls-ca")
        defer { probeDir.remove() }
        let running = try Self.startWithTLS()
        defer { running.harness.shutdown(); running.dir.remove() }
        let ca = running.harness.certificates.caCertificate
        let https = try HTTPProbe.request("https://127.0.0.1:\(running.port)/v2/podinfo/manifests/latest", caFile: ca.path)
        #expect(https.status == 200)
        #expect(https.json?["schemaVersion"] as? Int == 2)
        // Plain HTTP to the TLS port gets no registry answer.
        #expect(try HTTPProbe.request("http://127.0.0.1:\(running.port)/v2/", maxTime: 5).status != 200)
        // skopeo verifying the certificate against the CA (as OCIRepository certSecretRef does).
        try FileManager.default.copyItem(at: ca, to: probeDir.appending("ca.crt"))
        let skopeo = try #require(findExecutable("skopeo"))
        let raw = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=true", "--cert-dir", probeDir.url.path,
                                          "docker://127.0.0.1:\(running.port)/podinfo:latest"], allowFailure: true)
        #expect(raw.status == 0, "\(raw.stderr)")
        #expect(Data(raw.stdout.utf8) == https.body)
    }

    /// Like `start`, with `flux.tls` set to the harness's dev certificate (it names 127.0.0.1).
    static func startWithTLS() throws -> Setup {
        let (dir, repo, harness) = try RelayHarness.single("flux-tls")
        let port = try harness.serveFlux("edge", yaml: """
            flux:
              tls: {certFile: \(harness.certificates.serverCertificate.path), keyFile: \(harness.certificates.serverKey.path)}

            """)
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("first artifact") { try !harness.published("edge").isEmpty }
        try harness.waitUntil("flux endpoint ready over TLS") {
            try HTTPProbe.request("https://127.0.0.1:\(port)/readyz", caFile: harness.certificates.caCertificate.path).status == 200
        }
        return Setup(dir: dir, repo: repo, harness: harness, port: port)
    }
}
