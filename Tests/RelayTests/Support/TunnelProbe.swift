import Foundation

/// Direct `Fetch` calls with a chosen token, through `relay-agent fetch`.
struct TunnelProbe {
    struct Result: Decodable {
        var code: String
        var message: String
        var bytes: UInt64
        /// Why the tunnel could not be used (e.g. `certificate_unknown_ca`), when it could not.
        var reason: String?
    }

    let harness: RelayHarness

    /// `name` picks the agent configuration (client certificate, CA) the probe uses; by default
    /// a fresh one with the harness's defaults.
    func fetch(digest: String, token: String, name: String? = nil) throws -> Result {
        let name = name ?? "probe-\(UUID().uuidString.prefix(8))"
        let config = try harness.agentConfig(name, token: token)
        let output = try runProcess(Binaries.relayAgent, ["fetch", "--config", config.path, "--digest", digest],
                                    allowFailure: true)
        return try JSONDecoder().decode(Result.self, from: Data(output.stdout.utf8))
    }
}
