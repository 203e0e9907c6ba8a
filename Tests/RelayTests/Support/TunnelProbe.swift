import Foundation

/// Direct `Fetch` calls with a chosen token, through `relay-agent fetch`.
struct TunnelProbe {
    struct Result: Decodable { var code: String; var message: String; var bytes: UInt64 }

    let harness: RelayHarness

    func fetch(digest: String, token: String) throws -> Result {
        let name = "probe-\(UUID().uuidString.prefix(8))"
        let config = try harness.agentConfig(name, token: token)
        let output = try runProcess(Binaries.relayAgent, ["fetch", "--config", config.path, "--digest", digest],
                                    allowFailure: true)
        return try JSONDecoder().decode(Result.self, from: Data(output.stdout.utf8))
    }
}
