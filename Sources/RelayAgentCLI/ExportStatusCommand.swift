import ArgumentParser

struct ExportStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export-status", abstract: "Write a signed status bundle (not yet built).")
    func run() async throws { throw ValidationError("not implemented yet") }
}

struct AgentKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "The agent's signing key (not yet built).")
    func run() async throws { throw ValidationError("not implemented yet") }
}
