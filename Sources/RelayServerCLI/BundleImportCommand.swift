import ArgumentParser

struct BundleImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "import", abstract: "Store a status bundle an agent wrote (not yet built).")
    func run() async throws { throw ValidationError("not implemented yet") }
}
