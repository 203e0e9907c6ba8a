import Logging
import ServiceLifecycle

/// Runs the agent until SIGTERM/SIGINT.
public struct AgentService: Service {
    let runtime: AgentRuntime

    public init(runtime: AgentRuntime) { self.runtime = runtime }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await runtime.run() }
    }

    public static func runUntilSignalled(_ runtime: AgentRuntime, logger: Logger) async throws {
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: AgentService(runtime: runtime))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
