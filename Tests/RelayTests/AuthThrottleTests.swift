import Crypto
import Foundation
import Logging
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing
@testable import RelayShared
import Wire

/// Failed authentication costs the attacker: per source address, failures beyond a small
/// burst are refused at once (HTTP 429 / gRPC RESOURCE_EXHAUSTED, with a retry hint) without
/// the token being checked; every failure is counted in a metric; the log gets a sample, not
/// a line per failure; another address with the right token is served at once.
@Suite struct AuthThrottleTests {
    static func lines(_ text: String) -> Int { text.split(separator: "\n").count }

    /// `count` requests on kept-alive connections from `source` (a fresh connection whenever
    /// the server closes one); the statuses and the last Retry-After seen.
    static func repeatRequests(port: Int, from source: String? = nil, count: Int,
                               _ request: (RawConnection, Int) -> RawConnection.Response?) throws -> (statuses: [Int: Int], retryAfter: String?) {
        var statuses: [Int: Int] = [:]
        var retryAfter: String?
        var connection = try RawConnection(port: port, from: source)
        for attempt in 0..<count {
            var response = request(connection, attempt)
            if response == nil {
                connection = try RawConnection(port: port, from: source)
                response = request(connection, attempt)
            }
            statuses[response?.status ?? 0, default: 0] += 1
            if response?.status == 429 { retryAfter = response?.headers["retry-after"] }
        }
        return (statuses, retryAfter)
    }

    @Test func failedReaderAndWebhookTokensAreThrottledPerAddress() throws {
        let (dir, _, harness) = try RelayHarness.single("auth-http")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        let port = harness.httpPort
        let linesBefore = Self.lines(harness.relayLog)

        let readers = try Self.repeatRequests(port: port, count: 1000) { connection, attempt in
            connection.exchange("GET", "/api/v1/agents", headers: ["Authorization: Bearer wrong-\(attempt)"])
        }
        #expect(readers.statuses[401, default: 0] + readers.statuses[429, default: 0] == 1000, "\(readers.statuses)")
        #expect(readers.statuses[429, default: 0] >= 900, "most failures are throttled: \(readers.statuses)")
        #expect(readers.retryAfter.flatMap { Int($0) }.map { $0 >= 1 } == true, "429 carries Retry-After")
        let hooks = try Self.repeatRequests(port: port, count: 100) { connection, _ in
            connection.exchange("POST", "/hooks/gitlab", headers: ["X-Gitlab-Token: wrong", "Content-Type: application/json"], body: "{}")
        }
        #expect(hooks.statuses[429, default: 0] >= 90, "the address is limited on the webhook too: \(hooks.statuses)")
        // Without credentials nothing is guessed: probes are never throttled.
        #expect(RawConnection.get(port: port, "/healthz")?.status == 200)

        // The right tokens from another address work at once.
        let other = try RawConnection(port: port, from: "127.0.0.2")
        #expect(other.exchange("GET", "/api/v1/agents", headers: ["Authorization: Bearer \(harness.readerToken)"])?.status == 200)
        let push = #"{"object_kind":"push","ref":"refs/heads/main","project":{"git_http_url":"/nowhere"}}"#
        #expect(other.exchange("POST", "/hooks/gitlab", headers: ["X-Gitlab-Token: \(harness.webhookToken)",
                                                                   "Content-Type: application/json"], body: push)?.status == 202)

        let samples = try HTTPLimitsTests.metrics(port)
        #expect(samples["relay_auth_failures_total{surface=\"status\"}"] == 1000)
        #expect((samples["relay_auth_throttled_total{surface=\"status\"}"] ?? 0) >= 900)
        #expect(samples["relay_auth_failures_total{surface=\"webhook\"}"] == 100)
        let grown = Self.lines(harness.relayLog) - linesBefore
        print("HTTP: 1000 bad reader tokens \(readers.statuses), 100 bad webhook tokens \(hooks.statuses); relay log +\(grown) lines")
        #expect(grown <= 20, "the relay's log grew by \(grown) lines for 1100 failures")
    }

    @Test func failedTunnelTokensAreThrottledAndAnAgentFromAnotherAddressConnects() async throws {
        let (dir, _, harness) = try RelayHarness.single("auth-tunnel")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        let linesBefore = Self.lines(harness.relayLog)

        let (codes, pushback) = try await Self.badFetches(port: harness.tunnelPort, ca: harness.certificates.caCertificate.path,
                                                         count: 1000)
        #expect(codes[.unauthenticated, default: 0] + codes[.resourceExhausted, default: 0] == 1000, "\(codes)")
        #expect(codes[.resourceExhausted, default: 0] >= 900, "most failures are throttled: \(codes)")
        #expect(pushback.flatMap { Int($0) }.map { $0 > 0 } == true, "throttled calls carry grpc-retry-pushback-ms")

        // A real agent with the right token, from 127.0.0.2, is served at once.
        let proxy = try FaultProxy(upstreamPort: harness.tunnelPort, sourceHost: "127.0.0.2")
        defer { proxy.stop() }
        try harness.startAgent("edge", relayPort: proxy.port)
        try harness.waitUntil("first artifact at an agent on another address", timeout: 10) { try !harness.published("edge").isEmpty }

        let samples = try HTTPLimitsTests.metrics(harness.httpPort)
        #expect(samples["relay_auth_failures_total{surface=\"tunnel\"}"] == 1000)
        #expect((samples["relay_auth_throttled_total{surface=\"tunnel\"}"] ?? 0) >= 900)
        let grown = Self.lines(harness.relayLog) - linesBefore
        print("tunnel: 1000 bad tokens \(codes); relay log +\(grown) lines")
        #expect(grown <= 20, "the relay's log grew by \(grown) lines for 1000 failures")
    }

    /// `count` Fetch calls with a wrong token on one connection: the status codes, and the
    /// last `grpc-retry-pushback-ms` seen.
    static func badFetches(port: Int, ca: String, count: Int) async throws -> ([RPCError.Code: Int], String?) {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port),
            transportSecurity: .tls { $0.trustRoots = .certificates([.file(path: ca, format: .pem)]) })
        return try await withGRPCClient(transport: transport) { client in
            let tunnel = Relay_V1_Tunnel.Client(wrapping: client)
            var codes: [RPCError.Code: Int] = [:]
            var pushback: String?
            for attempt in 0..<count {
                do {
                    try await tunnel.fetch(.with { $0.digest = "sha256:" + String(repeating: "0", count: 64) },
                                           metadata: ["authorization": "Bearer wrong-\(attempt)"]) { response in
                        for try await _ in response.messages {}
                    }
                } catch let error as RPCError {
                    codes[error.code, default: 0] += 1
                    if let value = error.metadata[stringValues: "grpc-retry-pushback-ms"].first(where: { _ in true }) { pushback = value }
                }
            }
            return (codes, pushback)
        }
    }

    @Test func failedPullCredentialsAndEventSignaturesAreThrottledOnTheAgent() throws {
        let (dir, _, harness) = try RelayHarness.single("auth-agent")
        defer { harness.shutdown(); dir.remove() }
        try Data("pull-secret".utf8).write(to: dir.appending("pull.password"))
        try Data("hmac-secret".utf8).write(to: dir.appending("events.token"))
        let port = try harness.serveFlux("edge", yaml: """
            flux:
              oci: {auth: {type: basic, username: flux, passwordFile: \(dir.appending("pull.password").path)}}
              events: {hmacTokenFile: \(dir.appending("events.token").path)}

            """)
        try harness.startRelay()
        try harness.startAgent("edge")
        try harness.waitUntil("flux endpoint ready") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        let linesBefore = Self.lines(harness.agentLog("edge"))
        func basic(_ password: String) -> String { "Authorization: Basic " + Data("flux:\(password)".utf8).base64EncodedString() }

        let pulls = try Self.repeatRequests(port: port, count: 300) { connection, attempt in
            connection.exchange("GET", "/v2/", headers: [basic("wrong-\(attempt)")])
        }
        #expect(pulls.statuses[429, default: 0] >= 250, "most failures are throttled: \(pulls.statuses)")
        // Anonymous requests carry nothing to guess: the usual challenge, not counted.
        #expect(RawConnection.get(port: port, "/v2/")?.status == 401)
        let event = #"{"involvedObject":{"kind":"Kustomization","namespace":"flux-system","name":"podinfo"},"severity":"info","reason":"ReconciliationSucceeded","message":"ok"}"#
        let events = try Self.repeatRequests(port: port, count: 50) { connection, _ in
            connection.exchange("POST", "/flux/events", headers: ["X-Signature: sha256=00", "Content-Type: application/json"], body: event)
        }
        #expect(events.statuses[429, default: 0] >= 45, "\(events.statuses)")

        // The right credentials from another address work at once.
        let other = try RawConnection(port: port, from: "127.0.0.2")
        #expect(other.exchange("GET", "/v2/", headers: [basic("pull-secret")])?.status == 200)
        let mac = HMAC<SHA256>.authenticationCode(for: Data(event.utf8), using: SymmetricKey(data: Data("hmac-secret".utf8)))
        let signature = "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
        #expect(other.exchange("POST", "/flux/events", headers: ["X-Signature: \(signature)", "Content-Type: application/json"],
                               body: event)?.status == 202)

        let samples = try HTTPLimitsTests.metrics(port)
        #expect(samples["relay_agent_auth_failures_total{surface=\"oci\"}"] == 300)
        #expect((samples["relay_agent_auth_throttled_total{surface=\"oci\"}"] ?? 0) >= 250)
        #expect(samples["relay_agent_auth_failures_total{surface=\"events\"}"] == 50)
        let grown = Self.lines(harness.agentLog("edge")) - linesBefore
        #expect(grown <= 20, "the agent's log grew by \(grown) lines for 350 failures")
    }

    /// Memory stays bounded whatever the number of addresses; IPv6 clients count per /64.
    @Test func theLimiterTracksBoundedAddressesAndGroupsIPv6By64() {
        var policy = AuthFailureLimiter.Policy()
        policy.maxAddresses = 100
        var quiet = Logger(label: "test")
        quiet.logLevel = .critical
        let limiter = AuthFailureLimiter(metricsPrefix: "test_limiter", logger: quiet, policy: policy)
        for index in 0..<5000 { limiter.recordFailure("10.\(index / 65536).\(index / 256 % 256).\(index % 256)", surface: "t", reason: "test") }
        #expect(limiter.trackedAddresses <= 100)
        for _ in 0..<Int(policy.burst) { limiter.recordFailure("192.0.2.1", surface: "t", reason: "test") }
        #expect(limiter.admit("192.0.2.1", surface: "t") != .allowed, "the newest address is still tracked")
        #expect(limiter.admit("192.0.2.2", surface: "t") == .allowed)

        #expect(AuthFailureLimiter.key(grpcPeer: "ipv4:127.0.0.1:5555") == "127.0.0.1")
        #expect(AuthFailureLimiter.key(grpcPeer: "ipv6:[2001:db8:1:2::1]:443") == AuthFailureLimiter.key(grpcPeer: "ipv6:[2001:db8:1:2:ffff::9]:1"))
        #expect(AuthFailureLimiter.key(grpcPeer: "ipv6:[2001:db8:1:2::1]:443") != AuthFailureLimiter.key(grpcPeer: "ipv6:[2001:db8:1:3::1]:443"))
        #expect(AuthFailureLimiter.key(grpcPeer: "ipv6:[::ffff:192.0.2.7]:80") == "192.0.2.7")
    }
}
