// Config errors name the cause: the real `relay-server check-config` and `relay-agent`
// reject unknown fields (with the nearest valid name), empty webhook tokens, unusable TLS
// files and malformed YAML, naming the field path and the line. The error text is the
// operator's API, so the tests assert on it.

import Foundation
import Testing
@testable import RelayShared

/// A directory with dev certificates, a token file and a valid relay.yaml / agent.yaml; each
/// check replaces some lines and runs the real CLI on the result.
struct ConfigCheck {
    let dir: TemporaryDirectory
    let certificates: DevCertificates

    /// Line numbers matter: tests expect errors at them.
    static let relayLines = [
        "listen: 127.0.0.1:8443",                        // 1
        "http: 127.0.0.1:8080",                          // 2
        "tls:",                                          // 3
        "  certFile: tls/server.pem",                    // 4
        "  keyFile: tls/server-key.pem",                 // 5
        "dataDir: relay-data",                           // 6
        "webhookToken: hook-secret",                     // 7
        "limits:",                                       // 8
        "  maxChunkBytes: 65536",                        // 9
        "sources:",                                      // 10
        "  - name: podinfo",                             // 11
        "    url: https://git.example.com/podinfo.git",  // 12
        "    ref:",                                      // 13
        "      branch: main",                            // 14
        "agents:",                                       // 15
        "  - name: edge",                                // 16
        "    tokenFile: agent.token",                    // 17
        "    sources: [podinfo]",                        // 18
    ]

    static let agentLines = [
        "relay: 127.0.0.1:8443",                         // 1
        "caFile: tls/ca.pem",                            // 2
        "tokenFile: agent.token",                        // 3
        "dataDir: agent-data",                           // 4
        "listen: 127.0.0.1:9090",                        // 5
        "flux:",                                         // 6
        "  events:",                                     // 7
        "    hmacTokenFile: agent.token",                // 8
    ]

    init() throws {
        dir = try TemporaryDirectory(prefix: "config-check")
        certificates = try DevCertificates.ensure(in: dir.appending("tls"))
        try Data("agent-token\n".utf8).write(to: dir.appending("agent.token"))
        try Data("not a certificate\n".utf8).write(to: dir.appending("garbage.pem"))
    }

    /// `relay-server check-config` on relay.yaml with `replace` applied (whole lines: old → new).
    func relay(_ replace: [String: String] = [:]) throws -> ProcessOutput {
        try run(Binaries.relayServer, ["check-config", "--config"], file: "relay.yaml", lines: Self.relayLines, replace)
    }

    /// `relay-agent list` (it loads the configuration first; or `command`) on agent.yaml with
    /// `replace` applied.
    func agent(_ replace: [String: String] = [:], command: String = "list") throws -> ProcessOutput {
        try run(Binaries.relayAgent, [command, "--config"], file: "agent.yaml", lines: Self.agentLines, replace)
    }

    /// A fresh directory, `mistake` applied to relay.yaml (or agent.yaml), its error checked.
    static func relay(_ mistake: ConfigMistake) throws { try with { mistake.check(try $0.relay(mistake.replace)) } }
    static func agent(_ mistake: ConfigMistake) throws { try with { mistake.check(try $0.agent(mistake.replace)) } }

    static func with(_ body: (ConfigCheck) throws -> Void) throws {
        let check = try ConfigCheck()
        defer { check.dir.remove() }
        try body(check)
    }

    private func run(_ binary: String, _ arguments: [String], file: String, lines: [String],
                     _ replace: [String: String]) throws -> ProcessOutput {
        for old in replace.keys { precondition(lines.contains(old), "no line '\(old)' in \(file)") }
        let text = lines.map { replace[$0] ?? $0 }.joined(separator: "\n") + "\n"
        let url = dir.appending(file)
        try Data(text.utf8).write(to: url)
        return try runProcess(binary, arguments + [url.path], timeout: 30, allowFailure: true)
    }
}

/// One configuration mistake and the error it must give.
struct ConfigMistake: Sendable, CustomStringConvertible {
    var replace: [String: String]
    /// What stderr must contain (the field path and, when given, the location and message).
    var expected: [String]

    init(_ old: String, _ new: String, _ expected: String...) {
        replace = [old: new]
        self.expected = expected
    }

    var description: String { replace.values.joined(separator: ", ") }

    /// The sample relay.yaml's Git source turned into `yaml` (its url and ref lines replaced).
    static func upstream(_ yaml: String, _ expected: String) -> ConfigMistake {
        var mistake = ConfigMistake("    url: https://git.example.com/podinfo.git", yaml, expected)
        mistake.replace["    ref:"] = "    interval: 1m"
        mistake.replace["      branch: main"] = ""
        return mistake
    }

    func check(_ output: ProcessOutput) {
        #expect(output.status == 2, "exit status; stdout: \(output.stdout)")
        for text in expected {
            #expect(output.stderr.contains(text), "stderr lacks '\(text)': \(output.stderr)")
        }
    }
}

@Suite("Config errors name the cause")
struct ConfigErrorTests {
    @Test("the unmodified relay.yaml and agent.yaml are accepted")
    func validConfigurationsPass() throws {
        try ConfigCheck.with { check in try checkValid(check) }
    }

    private func checkValid(_ check: ConfigCheck) throws {
        let relay = try check.relay()
        #expect(relay.status == 0, "\(relay.stderr)")
        let agent = try check.agent()
        #expect(agent.status == 0, "\(agent.stderr)")
        let checked = try check.agent(command: "check-config")
        #expect(checked.status == 0 && checked.stdout.hasPrefix("ok: relay 127.0.0.1:8443"), "\(checked.stderr)")
        ConfigMistake("caFile: tls/ca.pem", "cafile: tls/ca.pem", "agent.yaml:2:1: cafile: unknown field")
            .check(try check.agent(["caFile: tls/ca.pem": "cafile: tls/ca.pem"], command: "check-config"))
    }

    @Test("relay.yaml: an unknown field at any depth names its path, line and the nearest valid name", arguments: [
        ConfigMistake("    ref:", "    reff:", "relay.yaml:13:5: sources[0].reff: unknown field; did you mean 'ref'?"),
        ConfigMistake("      branch: main", "      brnach: main", "relay.yaml:14:7: sources[0].ref.brnach: unknown field; did you mean 'branch'?"),
        ConfigMistake("webhookToken: hook-secret", "webhookTokn: hook-secret", "relay.yaml:7:1: webhookTokn: unknown field; did you mean 'webhookToken'?"),
        ConfigMistake("  certFile: tls/server.pem", "  certFlie: tls/server.pem", "relay.yaml:4:3: tls.certFlie: unknown field; did you mean 'certFile'?"),
        ConfigMistake("  maxChunkBytes: 65536", "  maxChunkByte: 65536", "relay.yaml:9:3: limits.maxChunkByte: unknown field; did you mean 'maxChunkBytes'?"),
        ConfigMistake("    tokenFile: agent.token", "    tokenFlie: agent.token", "relay.yaml:17:5: agents[0].tokenFlie: unknown field; did you mean 'tokenFile'?"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ncolour: blue", "relay.yaml:7:1: colour: unknown field; expected one of: "),
    ])
    func unknownRelayField(_ mistake: ConfigMistake) throws {
        try ConfigCheck.relay(mistake)
    }

    @Test("agent.yaml: an unknown field at any depth names its path, line and the nearest valid name", arguments: [
        ConfigMistake("    hmacTokenFile: agent.token", "    hmacTokenFlie: agent.token",
                      "agent.yaml:8:5: flux.events.hmacTokenFlie: unknown field; did you mean 'hmacTokenFile'?"),
        ConfigMistake("caFile: tls/ca.pem", "cafile: tls/ca.pem", "agent.yaml:2:1: cafile: unknown field; did you mean 'caFile'?"),
        ConfigMistake("  events:", "  event:", "agent.yaml:7:3: flux.event: unknown field; did you mean 'events'?"),
    ])
    func unknownAgentField(_ mistake: ConfigMistake) throws {
        try ConfigCheck.agent(mistake)
    }

    @Test("malformed YAML and wrong value types give the line and column", arguments: [
        ConfigMistake("  keyFile: tls/server-key.pem", "  keyFile: [tls/server-key.pem", "relay.yaml:6:", "not valid YAML"),
        ConfigMistake("sources:", "sources: x: y", "relay.yaml:10:", "not valid YAML"),
        ConfigMistake("  maxChunkBytes: 65536", "  maxChunkBytes: lots",
                      "relay.yaml:9:3: limits.maxChunkBytes: expected a whole number, found 'lots'"),
        ConfigMistake("    sources: [podinfo]", "    sources: podinfo", "relay.yaml:18:5: agents[0].sources: expected a list, found 'podinfo'"),
        ConfigMistake("  maxChunkBytes: 65536", "  maxChunkBytes: {a: 1}", "relay.yaml:9:3: limits.maxChunkBytes: expected a single value, found a mapping"),
        ConfigMistake("http: 127.0.0.1:8080", "http: 127.0.0.1:8080\nhttp: 127.0.0.1:8081", "relay.yaml:", "duplicate key 'http'"),
    ])
    func malformedRelayYAML(_ mistake: ConfigMistake) throws {
        try ConfigCheck.relay(mistake)
    }

    @Test("relay.yaml: database.postgres and replica mistakes name the field", arguments: [
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ndatabase: {postgres: {url: \"postgres://relay:secret@db/relay\"}}",
                      "database.postgres.url: must not hold a password"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ndatabase: {postgres: {url: \"mysql://relay@db/relay\"}}",
                      "database.postgres.url: must be postgres://"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ndatabase: {postgres: {host: db, user: relay}}",
                      "database.postgres.database: is required"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ndatabase: {postgres: {host: db, database: relay, user: relay, poolSize: 0}}",
                      "database.postgres.poolSize: must be 1…64"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ndatabase: {postgres: {url: \"postgres://relay@db/relay\", host: db}}",
                      "database.postgres.url: give either url or host"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\ndatabase: {postgres: {url: \"postgres://relay@db/relay\", passwordFile: nope.password}}",
                      "database.postgres.passwordFile: "),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\nreplica: \" \"", "replica: "),
    ])
    func databaseMistakes(_ mistake: ConfigMistake) throws {
        try ConfigCheck.relay(mistake)
    }

    @Test("relay.yaml: helm and oci source mistakes name the field", arguments: [
        ConfigMistake("    url: https://git.example.com/podinfo.git", "    helm: {url: https://charts.example, chart: podinfo}\n    url: https://git.example.com/podinfo.git",
                      "sources[0]: set only one of url, helm and oci"),
        ConfigMistake.upstream("    ignore: docs/", "sources[0]: set url (a Git repository), helm (a chart) or oci (an OCI artifact)"),
        ConfigMistake("    url: https://git.example.com/podinfo.git", "    helm: {url: https://charts.example, chart: podinfo}",
                      "sources[0].ref: applies to Git sources (url) only"),
        ConfigMistake.upstream("    helm: {url: ftp://charts.example, chart: podinfo}",
                      "sources[0].helm.url: expected https://<repository>"),
        ConfigMistake.upstream("    helm: {url: https://charts.example, chart: podinfo, version: \">=1.0 <<2\"}",
                      "sources[0].helm.version: "),
        ConfigMistake.upstream("    helm: {url: oci://ghcr.io, chart: podinfo}",
                      "sources[0].helm.url: expected oci://<registry host>/<repository>"),
        ConfigMistake.upstream("    oci: {url: oci://ghcr.io/org/app, ref: {tag: v1, digest: \"sha256:00\"}}",
                      "sources[0].oci.ref: set one of tag, semver and digest"),
        ConfigMistake.upstream("    oci: {url: oci://ghcr.io/org/app, ref: {digest: \"sha256:00\"}}",
                      "sources[0].oci.ref.digest: expected sha256:<64 lowercase hex>"),
        ConfigMistake.upstream("    oci: {url: oci://ghcr.io/org/app, auth: {username: bob}}",
                      "sources[0].oci.auth: set both username and passwordFile"),
        ConfigMistake.upstream("    oci: {url: oci://ghcr.io/Org/App}",
                      "sources[0].oci.url: 'oci://ghcr.io/Org/App' is not a valid registry repository"),
        ConfigMistake.upstream("    helm: {url: https://charts.example, chart: podinfo, caFile: nope.pem}",
                      "sources[0].helm.caFile: cannot read"),
    ])
    func upstreamMistakes(_ mistake: ConfigMistake) throws {
        try ConfigCheck.relay(mistake)
    }

    @Test("relay.yaml: rollout, freeze, environment and access mistakes name the field", arguments: [
        ConfigMistake("      branch: main", "      branch: main\n    rollout: {waves: []}", "sources[0].rollout.waves: list at least one wave"),
        ConfigMistake("      branch: main", "      branch: main\n    rollout: {waves: [{agents: [\"[a-\"]}]}",
                      "sources[0].rollout.waves[0].agents[0]: '[a-' is not a valid glob"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\nfreezes: [{start: \"0 25 * * FRI\", end: \"0 7 * * MON\"}]",
                      "freezes[0].start: field 2 (hour): 25 is out of range 0-23"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\nfreezes: [{start: \"0 23 * * FRI\", end: \"0 7 * *\"}]",
                      "freezes[0].end: expected 5 fields"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\nfreezes: [{start: \"0 23 * * FRI\", end: \"0 7 * * MON\", timeZone: Mars/Olympus}]",
                      "freezes[0].timeZone: 'Mars/Olympus' is not an IANA time zone name"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\naccess: {source: nope}", "access.source: unknown source 'nope'"),
        ConfigMistake("dataDir: relay-data", "dataDir: relay-data\naccess: {source: podinfo, path: ../x.yaml}", "access.path: expected a file path inside the repository"),
        ConfigMistake("      branch: main", "      branch: main\n    gitlab: {url: https://gitlab.example, project: g/p, tokenFile: agent.token, environments: [{agents: [edge], name: prod, tier: live}]}",
                      "sources[0].gitlab.environments[0].tier: 'live' is not one of GitLab's tiers"),
        ConfigMistake("      branch: main", "      branch: main\n    gitlab: {url: https://gitlab.example, project: g/p, tokenFile: agent.token, environments: [{agents: [edge], name: prod, kubernetesNamespace: flux-system}]}",
                      "sources[0].gitlab.environments[0].clusterAgentID: kubernetesNamespace and fluxResourcePath need the GitLab cluster agent's id"),
    ])
    func rolloutMistakes(_ mistake: ConfigMistake) throws {
        try ConfigCheck.relay(mistake)
    }

    @Test("agent.yaml: a wrong value type gives the line")
    func malformedAgentYAML() throws {
        try ConfigCheck.agent(ConfigMistake("dataDir: agent-data", "dataDir: [a, b]",
                                            "agent.yaml:4:1: dataDir: expected a single value, found a list"))
    }

    @Test("an empty or blank webhook token is rejected, naming the field", arguments: [
        ConfigMistake("webhookToken: hook-secret", #"webhookToken: """#, "relay.yaml:7:1: webhookToken: "),
        ConfigMistake("webhookToken: hook-secret", #"webhookToken: "   ""#, "relay.yaml:7:1: webhookToken: "),
        ConfigMistake("webhookToken: hook-secret", "webhookTokenFile: blank.token", "webhookTokenFile: "),
    ])
    func emptyWebhookToken(_ mistake: ConfigMistake) throws {
        try ConfigCheck.with { check in
            try Data(" \n\t\n".utf8).write(to: check.dir.appending("blank.token"))
            mistake.check(try check.relay(mistake.replace))
        }
    }

    @Test("relay.yaml: a certificate that is not PEM, a key that does not match it, or a bad CA fails check-config", arguments: [
        ConfigMistake("  certFile: tls/server.pem", "  certFile: garbage.pem", "tls.certFile: ", "garbage.pem"),
        ConfigMistake("  keyFile: tls/server-key.pem", "  keyFile: garbage.pem", "tls.keyFile: ", "garbage.pem"),
        ConfigMistake("  keyFile: tls/server-key.pem", "  keyFile: tls/ca-key.pem", "tls.keyFile: ", "does not match"),
        ConfigMistake("  keyFile: tls/server-key.pem", "  keyFile: tls/server-key.pem\n  clientCAFile: garbage.pem", "tls.clientCAFile: ", "garbage.pem"),
    ])
    func relayTLSFiles(_ mistake: ConfigMistake) throws {
        try ConfigCheck.relay(mistake)
    }

    @Test("agent.yaml: a bad CA, a client key that does not match its certificate, or a bad flux.tls pair is rejected", arguments: [
        ConfigMistake("caFile: tls/ca.pem", "caFile: garbage.pem", "caFile: ", "garbage.pem"),
        ConfigMistake("dataDir: agent-data", "dataDir: agent-data\nclientCertFile: tls/server.pem\nclientKeyFile: tls/ca-key.pem",
                      "clientKeyFile: ", "does not match"),
        ConfigMistake("dataDir: agent-data", "dataDir: agent-data\nclientCertFile: garbage.pem\nclientKeyFile: tls/ca-key.pem",
                      "clientCertFile: ", "garbage.pem"),
        ConfigMistake("  events:", "  tls: {certFile: tls/server.pem, keyFile: tls/ca-key.pem}\n  events:", "flux.tls.keyFile: ", "does not match"),
        ConfigMistake("  events:", "  tls: {certFile: garbage.pem, keyFile: tls/server-key.pem}\n  events:", "flux.tls.certFile: ", "garbage.pem"),
    ])
    func agentTLSFiles(_ mistake: ConfigMistake) throws {
        try ConfigCheck.agent(mistake)
    }

    @Test("agent.yaml: relays (replicas) is checked entry by entry, and relay and relays exclude each other", arguments: [
        ConfigMistake("relay: 127.0.0.1:8443", "relays: []", "relays: list at least one host:port"),
        ConfigMistake("relay: 127.0.0.1:8443", "relays: [127.0.0.1:8443, relay-b]", "relays[1]: expected host:port"),
        ConfigMistake("relay: 127.0.0.1:8443", "relays: [127.0.0.1:8443, 127.0.0.1:8443]", "relays[1]: 127.0.0.1:8443 is listed twice"),
        ConfigMistake("relay: 127.0.0.1:8443", "relay: 127.0.0.1:8443\nrelays: [127.0.0.1:8444]", "relays: set relay (one relay) or relays (replicas), not both"),
        ConfigMistake("caFile: tls/ca.pem", "", "caFile: required with relay"),
    ])
    func agentRelays(_ mistake: ConfigMistake) throws {
        try ConfigCheck.agent(mistake)
    }

    @Test("agent.yaml: relays with several replicas is accepted, and check-config names them all")
    func agentRelaysAccepted() throws {
        try ConfigCheck.with { check in
            let output = try check.agent(["relay: 127.0.0.1:8443": "relays: [127.0.0.1:8443, relay-b.example.com:8443]"], command: "check-config")
            #expect(output.status == 0, "\(output.stderr)")
            #expect(output.stdout.hasPrefix("ok: relays 127.0.0.1:8443, relay-b.example.com:8443"), "\(output.stdout)")
        }
    }
}
