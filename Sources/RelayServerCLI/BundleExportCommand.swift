import ArgumentParser

struct BundleExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Write a signed bundle for one agent (not yet built).")
    func run() async throws { throw ValidationError("not implemented yet") }
}
