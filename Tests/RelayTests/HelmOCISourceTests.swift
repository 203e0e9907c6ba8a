import Crypto
import Foundation
import Testing

/// Helm charts and OCI artifacts as sources, end to end against real upstreams started here:
/// a static Helm repository (lighttpd, Basic auth) and the CNCF distribution registry
/// (Debian's docker-registry, htpasswd auth) filled with skopeo from OCI layouts written in
/// Helm's and Flux's layouts. The agent's endpoint is then pulled with skopeo, oras-py and a
/// Python client that resolves a chart the way helm-controller does.
@Suite struct HelmOCISourceTests {
    static let fixture = FluxOCITests.fixture("helm/helm_fixture.py")

    static func helmFixture(_ arguments: [String]) throws -> String {
        try runProcess("/usr/bin/env", ["python3", fixture] + arguments, timeout: 60).stdout
    }

    static func digest(_ file: URL) throws -> String {
        "sha256:" + SHA256.hash(data: try Data(contentsOf: file)).map { String(format: "%02x", $0) }.joined()
    }

    static func skopeo() throws -> String { try #require(findExecutable("skopeo"), "skopeo is installed by scripts/setup.sh") }

    static func tags(_ host: String, _ repository: String, creds: String? = nil) throws -> Set<String> {
        var arguments = ["list-tags", "--tls-verify=false"]
        if let creds { arguments += ["--creds", creds] }
        let out = try runProcess(try skopeo(), arguments + ["docker://\(host)/\(repository)"])
        let object = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        return Set(object?["Tags"] as? [String] ?? [])
    }

    static func rawManifest(_ reference: String, creds: String? = nil) throws -> Data {
        var arguments = ["inspect", "--raw", "--tls-verify=false"]
        if let creds { arguments += ["--creds", creds] }
        return Data(try runProcess(try skopeo(), arguments + [reference]).stdout.utf8)
    }

    static func sha256(_ data: Data) -> String { "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() }

    @Test func chartFromAHelmRepositoryIsServedAsHelmPushLaysItOut() throws {
        let dir = try TemporaryDirectory(prefix: "helm-http")
        defer { dir.remove() }
        let charts = try dir.subdirectory("charts")
        for version in ["6.0.0", "6.1.0", "7.0.0"] {
            _ = try Self.helmFixture(["chart", charts.appendingPathComponent("podinfo-\(version).tgz").path, "podinfo", version])
        }
        _ = try Self.helmFixture(["index", charts.path])
        let repo = try HelmRepoServer(root: charts, username: "alice", password: "s3cret-pw")
        defer { repo.stop() }
        try Data("s3cret-pw\n".utf8).write(to: dir.appending("repo.password"))

        let harness = try RelayHarness(sources: [], agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo"])], dir: dir)
        harness.relayExtraYAML = "  - {name: podinfo, helm: {url: \(repo.url), chart: podinfo, version: \">=6.0.0 <7.0.0\", "
            + "auth: {username: alice, passwordFile: \(dir.appending("repo.password").path)}}, interval: 1h}\n"
        let port = try harness.serveFlux("edge")
        try harness.startRelay()
        defer { harness.shutdown() }
        try harness.startAgent("edge")
        try harness.waitUntil("the chart at the agent", timeout: 60) { try !harness.published("edge").isEmpty }
        let upstream = charts.appendingPathComponent("podinfo-6.1.0.tgz")
        let upstreamDigest = try Self.digest(upstream)
        let published = try #require(try harness.published("edge").first)
        // The highest version in the range, byte for byte.
        #expect(published.digest == upstreamDigest)
        #expect(published.revision == "6.1.0@\(upstreamDigest)")

        // The manifest as `helm push` writes it.
        let agent = "127.0.0.1:\(port)"
        let manifestBytes = try Self.rawManifest("docker://\(agent)/podinfo:6.1.0")
        let manifest = try #require(try JSONSerialization.jsonObject(with: manifestBytes) as? [String: Any])
        #expect(manifest["mediaType"] == nil)
        let config = try #require(manifest["config"] as? [String: Any])
        #expect(config["mediaType"] as? String == "application/vnd.cncf.helm.config.v1+json")
        let layers = try #require(manifest["layers"] as? [[String: Any]])
        #expect(layers.count == 1)
        #expect(layers.first?["mediaType"] as? String == "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
        #expect(layers.first?["digest"] as? String == upstreamDigest)
        let annotations = try #require(manifest["annotations"] as? [String: String])
        #expect(annotations["org.opencontainers.image.title"] == "podinfo")
        #expect(annotations["org.opencontainers.image.version"] == "6.1.0")
        #expect(annotations["org.opencontainers.image.created"] == "2026-11-02T10:00:00Z")
        #expect(annotations["org.opencontainers.image.authors"] == "relay (relay@example.com)")
        #expect(String(decoding: manifestBytes, as: UTF8.self).contains(#"for \u003ctests\u003e \u0026 checks"#))
        let head = try HTTPProbe.request("http://\(agent)/v2/podinfo/manifests/6.1.0", method: "HEAD")
        #expect(head.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json")
        #expect(head.headers["docker-content-digest"] == Self.sha256(manifestBytes))

        // skopeo copies it; the layer is the upstream .tgz, the config Chart.yaml as JSON.
        let copied = dir.appending("skopeo-copy")
        _ = try runProcess(try Self.skopeo(), ["copy", "--src-tls-verify=false", "docker://\(agent)/podinfo:6.1.0", "dir:\(copied.path)"], timeout: 60)
        #expect(try Data(contentsOf: copied.appendingPathComponent(String(upstreamDigest.dropFirst(7)))) == (try Data(contentsOf: upstream)))
        let configBytes = try Data(contentsOf: copied.appendingPathComponent(String((config["digest"] as? String ?? "").dropFirst(7))))
        let configJSON = try #require(try JSONSerialization.jsonObject(with: configBytes) as? [String: Any])
        #expect(configJSON["name"] as? String == "podinfo")
        #expect(configJSON["version"] as? String == "6.1.0")
        #expect(configJSON["apiVersion"] as? String == "v2")
        #expect(String(decoding: configBytes, as: UTF8.self).hasPrefix(#"{"name":"podinfo","home":"#))

        // helm-controller's way for `HelmRepository {type: oci}`: tags → range → manifest → config → layer.
        let resolved = try Self.resolve(agent, "podinfo", ">=6.0.0 <7.0.0", dir.appending("resolved"))
        #expect(resolved["version"] as? String == "6.1.0")
        #expect(resolved["configMediaType"] as? String == "application/vnd.cncf.helm.config.v1+json")
        #expect(resolved["layerDigest"] as? String == upstreamDigest)
        #expect(Set(resolved["files"] as? [String] ?? []).isSuperset(of: ["podinfo/Chart.yaml", "podinfo/templates/deployment.yaml"]))

        // oras-py pulls the chart layer; the ExternalArtifact URL carries the .tgz itself.
        let python = try InteropTests.python()
        let oras = try runProcess(python, [FluxOCITests.fixture("oci/oras_pull.py"), agent, "podinfo", "6.1.0", dir.appending("oras").path], timeout: 120)
        let orasReport = try #require(try JSONSerialization.jsonObject(with: Data(oras.stdout.utf8)) as? [String: Any])
        let orasFiles = try #require(orasReport["files"] as? [String])
        #expect(try orasFiles.map { try Data(contentsOf: URL(fileURLWithPath: $0)) } == [try Data(contentsOf: upstream)])
        let plain = try HTTPProbe.request("http://\(agent)/artifacts/sha256/\(upstreamDigest.dropFirst(7)).tar.gz")
        #expect(plain.sha256 == upstreamDigest)

        // A new version upstream: offered at once on POST /hooks/oci; both versions tagged.
        _ = try Self.helmFixture(["chart", charts.appendingPathComponent("podinfo-6.2.0.tgz").path, "podinfo", "6.2.0"])
        _ = try Self.helmFixture(["index", charts.path])
        let hook = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/hooks/oci", method: "POST",
                                         headers: ["Authorization: Bearer \(harness.webhookToken)", "Content-Type: application/json"],
                                         body: Data(#"{"source":"podinfo"}"#.utf8))
        #expect(hook.status == 202, "\(hook.text)")
        try harness.waitUntil("6.2.0 at the agent", timeout: 60) { try Self.tags(agent, "podinfo").contains("6.2.0") }
        let tags = try Self.tags(agent, "podinfo")
        #expect(tags.isSuperset(of: ["6.1.0", "6.2.0", "latest"]))
        #expect(!tags.contains("7.0.0") && !tags.contains("6.0.0"))
        #expect(try Self.resolve(agent, "podinfo", ">=6.0.0 <7.0.0", dir.appending("resolved-2"))["version"] as? String == "6.2.0")
    }

    @Test func chartsAndFluxArtifactsFromARegistryKeepTheirDigests() throws {
        let dir = try TemporaryDirectory(prefix: "helm-oci")
        defer { dir.remove() }
        let registry = try OCIRegistryServer(username: "bob", password: "registry-pw")
        defer { registry.stop() }
        let creds = "bob:registry-pw"
        let layout = dir.appending("layout")
        for version in ["6.0.0", "6.1.0", "6.1.1-rc.1"] {
            let chart = dir.appending("podinfo-\(version).tgz")
            _ = try Self.helmFixture(["chart", chart.path, "podinfo", version])
            _ = try Self.helmFixture(["layout", layout.path, version, "--chart", chart.path])
            try registry.push(layout: layout, tag: version, to: "charts/podinfo")
        }
        // A Flux artifact as `flux push artifact` makes it.
        let content = try dir.subdirectory("content")
        try Data("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n".utf8).write(to: content.appendingPathComponent("app.yaml"))
        let tarball = dir.appending("app.tar.gz")
        _ = try runProcess("/usr/bin/env", ["tar", "-C", content.path, "-czf", tarball.path, "app.yaml"])
        let fluxLayout = dir.appending("flux-layout")
        let fluxDigest = try Self.helmFixture(["layout", fluxLayout.path, "latest", "--flux", tarball.path, "--revision", "main@sha1:0123456789abcdef0123456789abcdef01234567"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try registry.push(layout: fluxLayout, tag: "latest", to: "group/app/manifests")
        // The publisher signs it with cosign's key mode (tag sha256-<hex>.sig beside it).
        let python = try InteropTests.python()
        let publisherKey = dir.appending("publisher.pub")
        let signatureTag = try runProcess(python, [Self.fixture, "sign", fluxLayout.path, fluxDigest, "\(registry.host)/group/app/manifests", publisherKey.path])
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try registry.push(layout: fluxLayout, tag: signatureTag, to: "group/app/manifests")
        try Data("registry-pw\n".utf8).write(to: dir.appending("registry.password"))

        let harness = try RelayHarness(sources: [], agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo", "app-manifests"])], dir: dir)
        let auth = "auth: {username: bob, passwordFile: \(dir.appending("registry.password").path)}, insecure: true"
        harness.relayExtraYAML = "  - {name: podinfo, helm: {url: oci://\(registry.host)/charts, chart: podinfo, version: \"6.x\", \(auth)}, interval: 2s}\n"
            + "  - {name: app-manifests, oci: {url: oci://\(registry.host)/group/app/manifests, ref: {tag: latest}, \(auth)}, interval: 1h}\n"
        let port = try harness.serveFlux("edge")
        try harness.startRelay()
        defer { harness.shutdown() }
        try harness.startAgent("edge")
        try harness.waitUntil("both sources at the agent", timeout: 60) { try harness.published("edge").count == 2 }
        let agent = "127.0.0.1:\(port)"

        // The chart's manifest is the registry's, byte for byte: the same digest a pin names.
        let upstreamChart = try Self.rawManifest("docker://\(registry.host)/charts/podinfo:6.1.0", creds: creds)
        #expect(try Self.rawManifest("docker://\(agent)/podinfo:6.1.0") == upstreamChart)
        #expect(try Self.tags(agent, "podinfo").isSuperset(of: ["6.1.0", "latest"]))
        let resolved = try Self.resolve(agent, "podinfo", ">=6.0.0 <7.0.0", dir.appending("resolved"))
        #expect(resolved["version"] as? String == "6.1.0")
        #expect(resolved["manifestDigest"] as? String == Self.sha256(upstreamChart))
        #expect(resolved["configName"] as? String == "podinfo")

        // The Flux artifact: manifest, config and layer as published.
        let upstreamApp = try Self.rawManifest("docker://\(registry.host)/group/app/manifests:latest", creds: creds)
        #expect(try Self.rawManifest("docker://\(agent)/app-manifests:latest") == upstreamApp)
        let appDigest = Self.sha256(upstreamApp)
        #expect(try HTTPProbe.request("http://\(agent)/v2/app-manifests/manifests/\(appDigest)").sha256 == appDigest)
        let copied = dir.appending("skopeo-app")
        _ = try runProcess(try Self.skopeo(), ["copy", "--src-tls-verify=false", "docker://\(agent)/app-manifests:latest", "dir:\(copied.path)"], timeout: 60)
        let tarballDigest = try Self.digest(tarball)
        #expect(try Data(contentsOf: copied.appendingPathComponent(String(tarballDigest.dropFirst(7)))) == (try Data(contentsOf: tarball)))
        let app = try #require(try harness.published("edge").first { $0.source == "app-manifests" })
        #expect(app.revision == "latest@\(appDigest)")
        #expect(app.digest == tarballDigest)

        // spec.verify with the publisher's key still works at the agent (its signature is
        // mirrored), and with the relay's key too: one signature image, a layer each.
        let relayConfig = dir.appending("relay.yaml").path
        let publicKey = dir.appending("relay.pub")
        try Data(try runProcess(Binaries.relayServer, ["keys", "public", "--config", relayConfig]).stdout.utf8).write(to: publicKey)
        let verifier = FluxOCITests.fixture("cosign/verify_signature.py")
        for (key, name) in [(publisherKey, "publisher"), (publicKey, "relay")] {
            let work = try dir.subdirectory("verify-\(name)")
            let out = try runProcess(python, [verifier, agent, "app-manifests", "latest", key.path, work.path], timeout: 120)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
            #expect(report["ok"] as? Bool == true, "\(name): \(out.stdout)")
            #expect(report["layers"] as? Int == 2)
        }
        // A key that signed nothing is refused (the check can fail).
        let strangerKey = dir.appending("stranger.key"), stranger = dir.appending("stranger.pub")
        _ = try runProcess("/usr/bin/env", ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", strangerKey.path])
        _ = try runProcess("/usr/bin/env", ["openssl", "ec", "-in", strangerKey.path, "-pubout", "-out", stranger.path])
        let refused = try runProcess(python, [verifier, agent, "app-manifests", "latest", stranger.path, try dir.subdirectory("verify-stranger").path], timeout: 120)
        #expect(refused.stdout.contains(#""ok": false"#), "\(refused.stdout)")

        // Offline (#8): a signed bundle carries both to an agent that reaches nothing; it
        // verifies and serves the same manifests.
        let bundle = dir.appending("offline.tar").path
        _ = try runProcess(Binaries.relayServer, ["bundle", "export", "--config", relayConfig, "--agent", "edge", "--output", bundle], timeout: 60)
        let offlinePort = try LoopbackPort.free()
        let offline = dir.appending("offline.yaml")
        try Data("name: edge\ndataDir: \(dir.appending("offline-agent").path)\ntrust: {relayPublicKeys: [\(publicKey.path)]}\nlisten: 127.0.0.1:\(offlinePort)\n".utf8).write(to: offline)
        let imported = try runProcess(Binaries.relayAgent, ["import", "--config", offline.path, bundle], timeout: 60, allowFailure: true)
        #expect(imported.status == 0, "\(imported.stdout)\(imported.stderr)")
        let offlineList = try JSONDecoder().decode([RelayHarness.Published].self,
                                                   from: Data(try runProcess(Binaries.relayAgent, ["list", "--config", offline.path, "--json"]).stdout.utf8))
        #expect(Set(offlineList.map(\.digest)) == Set(try harness.published("edge").map(\.digest)))
        let server = try BackgroundProcess(name: "relay-agent-offline", executable: Binaries.relayAgent, arguments: ["run", "--config", offline.path],
                                           logFile: dir.appending("offline-agent.log"))
        defer { server.stop() }
        try LoopbackPort.waitUntilAccepting(offlinePort, process: server, timeout: 20)
        let offlineAgent = "127.0.0.1:\(offlinePort)"
        try harness.waitUntil("the offline agent serves the chart") { try HTTPProbe.request("http://\(offlineAgent)/readyz").status == 200 }
        #expect(try Self.rawManifest("docker://\(offlineAgent)/podinfo:6.1.0") == upstreamChart)
        #expect(try Self.rawManifest("docker://\(offlineAgent)/app-manifests:latest") == upstreamApp)
        let offlineCheck = try runProcess(python, [verifier, offlineAgent, "app-manifests", "latest", publisherKey.path,
                                                   try dir.subdirectory("verify-offline").path], timeout: 120)
        #expect(offlineCheck.stdout.contains(#""ok": true"#), "\(offlineCheck.stdout)")

        // A new chart version pushed upstream reaches the online agent with the next poll (2 s).
        let next = dir.appending("podinfo-6.2.0.tgz")
        _ = try Self.helmFixture(["chart", next.path, "podinfo", "6.2.0"])
        _ = try Self.helmFixture(["layout", layout.path, "6.2.0", "--chart", next.path])
        try registry.push(layout: layout, tag: "6.2.0", to: "charts/podinfo")
        try harness.waitUntil("6.2.0 polled", timeout: 30) { try Self.tags(agent, "podinfo").contains("6.2.0") }
        #expect(try Self.rawManifest("docker://\(agent)/podinfo:6.2.0") == (try Self.rawManifest("docker://\(registry.host)/charts/podinfo:6.2.0", creds: creds)))
        #expect(try Self.tags(agent, "podinfo").isSuperset(of: ["6.1.0", "6.2.0"]))
    }

    static func resolve(_ host: String, _ repository: String, _ range: String, _ out: URL) throws -> [String: Any] {
        let output = try helmFixture(["resolve", host, repository, range, out.path])
        return try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
    }
}
