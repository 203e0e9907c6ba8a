import GRPCCore

/// The relay's "come back in" hint on a refusal: gRPC's `grpc-retry-pushback-ms` metadata.
/// The relay sends it when it admits sessions slowly (a fleet reconnecting at once,
/// UNAVAILABLE), when its Fetch queue is full (RESOURCE_EXHAUSTED), and after repeated failed
/// tokens; the agent waits exactly that long instead of its own backoff, so the relay can
/// spread the fleet's return over the time it needs.
enum RetryPushback {
    /// The longest hint the agent honours (a bound against a confused relay).
    static let maximum: Duration = .seconds(600)

    static func delay(of error: any Error) -> Duration? {
        guard let error = error as? RPCError,
              let text = error.metadata[stringValues: "grpc-retry-pushback-ms"].first(where: { _ in true }),
              let milliseconds = Int64(text.trimmingCharacters(in: .whitespaces)), milliseconds >= 0 else { return nil }
        return min(.milliseconds(milliseconds), maximum)
    }
}
