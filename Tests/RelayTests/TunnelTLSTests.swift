import Foundation
import RelayAgent
import RelayServer
@testable import RelayShared
import Testing

/// TLS on the tunnel and on the agent's HTTPS endpoint, checked with `openssl s_client` and
/// real agents: TLS 1.3 only by default, client certificates bound to agents on request, and a
/// bad relay certificate reported as exactly that.
@Suite struct TunnelTLSTests {
    /// Whether `openssl s_client` completes a handshake with 127.0.0.1:`port` using `options`.
    static func handshake(_ port: Int, ca: URL, _ options: [String]) throws -> Bool {
        let output = try runProcess("/usr/bin/env", ["openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost",
                                                     "-CAfile", ca.path, "-verify_return_error"] + options,
                                    timeout: 20, allowFailure: true)
        return output.status == 0
    }

    @Test func theTunnelAndTheAgentsHTTPSEndpointSpeakOnlyTLS13() throws {
        let (dir, harness, fluxPort) = try Self.relayAndHTTPSAgent("tls13", minVersion: nil)
        defer { harness.shutdown(); dir.remove() }
        let ca = harness.certificates.caCertificate
        for (what, port) in [("tunnel", harness.tunnelPort), ("agent HTTPS endpoint", fluxPort)] {
            #expect(try Self.handshake(port, ca: ca, ["-tls1_3"]), "\(what): TLS 1.3")
            #expect(try !Self.handshake(port, ca: ca, ["-tls1_2"]), "\(what): TLS 1.2 must be refused")
            #expect(try !Self.handshake(port, ca: ca, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]), "\(what): CBC-SHA")
        }
    }

    /// A relay and an agent serving Flux over HTTPS, both at `minVersion` (default: TLS 1.3 only).
    static func relayAndHTTPSAgent(_ name: String, minVersion: String?) throws -> (TemporaryDirectory, RelayHarness, Int) {
        let (dir, _, harness) = try RelayHarness.single(name)
        let version = minVersion.map { ", minVersion: \"\($0)\"" } ?? ""
        if let minVersion { harness.tlsExtraYAML = ["minVersion: \"\(minVersion)\""] }
        let fluxPort = try harness.serveFlux("edge", yaml: """
            flux:
              tls: {certFile: \(harness.certificates.serverCertificate.path), keyFile: \(harness.certificates.serverKey.path)\(version)}

            """)
        try harness.startRelay()
        try harness.startAgent("edge")
        let ca = harness.certificates.caCertificate
        try harness.waitUntil("flux endpoint up") { try HTTPProbe.request("https://127.0.0.1:\(fluxPort)/healthz", caFile: ca.path).status == 200 }
        return (dir, harness, fluxPort)
    }

    @Test func minVersion12AllowsOnlyForwardSecretAEADSuites() throws {
        let (dir, harness, fluxPort) = try Self.relayAndHTTPSAgent("tls12", minVersion: "1.2")
        defer { harness.shutdown(); dir.remove() }
        let ca = harness.certificates.caCertificate
        for (what, port) in [("tunnel", harness.tunnelPort), ("agent HTTPS endpoint", fluxPort)] {
            #expect(try Self.handshake(port, ca: ca, ["-tls1_3"]), "\(what): TLS 1.3")
            for suite in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"] {
                #expect(try Self.handshake(port, ca: ca, ["-tls1_2", "-cipher", suite]), "\(what): \(suite)")
            }
            for suite in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "AES128-GCM-SHA256", "AES128-SHA"] {
                #expect(try !Self.handshake(port, ca: ca, ["-tls1_2", "-cipher", suite]), "\(what): \(suite) must be refused")
            }
        }
        try harness.waitUntil("the agent synced over TLS 1.3") { try !harness.published("edge").isEmpty }
    }

    @Test func aClientCertificateMustNameTheAgentOfTheToken() throws {
        let dir = try TemporaryDirectory(prefix: "bind-cert")
        defer { dir.remove() }
        let repo = try TunnelTests.makeRepo(dir, "app", files: ["app.yaml": "v: 1\n"])
        let harness = try RelayHarness(sources: [.init(name: "app", repo: repo, branch: "main")], agents: [
            .init(name: "edge-1", token: "tok-1", sources: ["app"]),
            .init(name: "edge-2", token: "tok-2", sources: ["app"]),
        ], dir: dir)
        defer { harness.shutdown() }
        harness.requireClientCertificates = true
        harness.tlsExtraYAML = ["bindClientCertificate: true"]
        let first = try harness.certificates.issueClientCertificate(commonName: "edge-1")
        let second = try harness.certificates.issueClientCertificate(commonName: "edge-2")
        harness.clientCertificates["edge-1"] = first
        harness.clientCertificates["edge-2"] = second
        harness.clientCertificates["imposter"] = second
        try harness.startRelay()
        try harness.startAgent("edge-1")
        try harness.waitUntil("edge-1 synced with its own certificate") { try !harness.published("edge-1").isEmpty }
        let digest = try #require(try harness.published("edge-1").first?.digest)

        let probe = TunnelProbe(harness: harness)
        // edge-2's certificate with edge-1's token: refused, naming both.
        let imposter = try probe.fetch(digest: digest, token: "tok-1", name: "imposter")
        #expect(imposter.code == "permissionDenied" && imposter.bytes == 0, "\(imposter)")
        #expect(imposter.message.contains("edge-1") && imposter.message.contains("edge-2"), "\(imposter)")
        // edge-2's certificate with its own token: fine.
        let own = try probe.fetch(digest: digest, token: "tok-2", name: "edge-2")
        #expect(own.code == "ok", "\(own)")
    }

    @Test func aBadRelayCertificateIsReportedAsACertificateProblem() throws {
        let (dir, _, harness) = try RelayHarness.single("bad-cert")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let revisions = try harness.api("sources/podinfo/revisions") as? [[String: Any]]
        let digest = try #require(revisions?.first?["digest"] as? String)
        let probe = TunnelProbe(harness: harness)
        #expect(try probe.fetch(digest: digest, token: "t-edge").code == "ok")

        // The agent trusts another CA: `relay-agent fetch` says so, and so does a running
        // agent's /metrics.
        harness.caFiles["stranger"] = try DevCertificates.ensure(in: dir.appending("other-ca")).caCertificate
        let stranger = try probe.fetch(digest: digest, token: "t-edge", name: "stranger")
        #expect(stranger.reason == "certificate_unknown_ca" && stranger.code != "ok", "\(stranger)")
        let metricsPort = try harness.serveFlux("stranger")
        try harness.startAgent("stranger", token: "t-edge")
        try harness.waitUntil("the agent counts the certificate error") {
            try MetricsAndLogsTests.scrape("http://127.0.0.1:\(metricsPort)/metrics")[
                #"relay_agent_tunnel_errors_total{reason="certificate_unknown_ca"}"#] ?? 0 >= 1
        }
        harness.stopAgent("stranger")

        // The relay's certificate expired.
        harness.stopRelay()
        let day: TimeInterval = 86_400
        _ = try DevCertificates.ensure(in: dir.appending("tls"), dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"],
                                       now: Date().addingTimeInterval(-2 * 365 * day))
        try harness.startRelay()
        let expired = try probe.fetch(digest: digest, token: "t-edge")
        #expect(expired.reason == "certificate_expired", "\(expired)")

        // The relay's certificate names other hosts.
        harness.stopRelay()
        _ = try DevCertificates.ensure(in: dir.appending("tls"), dnsNames: ["relay.example"], ipAddresses: ["10.9.9.9"])
        try harness.startRelay()
        let mismatch = try probe.fetch(digest: digest, token: "t-edge")
        #expect(mismatch.reason == "certificate_name_mismatch", "\(mismatch)")
    }

    @Test func theTLSFieldsAreCheckedAndNamedInErrors() throws {
        let dir = try TemporaryDirectory(prefix: "tls-config")
        defer { dir.remove() }
        let tls = try DevCertificates.ensure(in: dir.appending("tls"))
        func relay(_ fields: String) throws(ConfigError) -> ResolvedServerConfig {
            try ServerConfig.parse(yaml: """
                listen: 127.0.0.1:8443
                http: 127.0.0.1:8080
                tls: {certFile: \(tls.serverCertificate.path), keyFile: \(tls.serverKey.path)\(fields)}
                dataDir: data
                sources: []
                agents: []
                """, baseDirectory: dir.url)
        }
        func relayError(_ fields: String) -> ConfigError? {
            do { _ = try relay(fields) } catch { return error }
            return nil
        }
        #expect(try relay("").tlsMinimumVersion == .tls13)
        let mutual = try relay(", clientCAFile: \(tls.caCertificate.path), bindClientCertificate: true, minVersion: \"1.2\"")
        #expect(mutual.tlsMinimumVersion == .tls12 && mutual.bindClientCertificate)
        #expect(relayError(", bindClientCertificate: true")?.field == "tls.bindClientCertificate")
        #expect(relayError(#", minVersion: "1.1""#)?.field == "tls.minVersion")

        let agent = """
            relay: 127.0.0.1:8443
            caFile: \(tls.caCertificate.path)
            tokenFile: \(dir.appending("t").path)
            dataDir: agent
            listen: 127.0.0.1:9090
            flux:
              tls: {certFile: \(tls.serverCertificate.path), keyFile: \(tls.serverKey.path), minVersion: "1.0"}
            """
        try Data("token".utf8).write(to: dir.appending("t"))
        do {
            _ = try AgentConfig.parse(yaml: agent, baseDirectory: dir.url)
            Issue.record("flux.tls.minVersion \"1.0\" was accepted")
        } catch {
            #expect(error.field == "flux.tls.minVersion")
        }
    }
}
