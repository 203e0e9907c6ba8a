import ArgumentParser

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Import a signed bundle (not yet built).")
    func run() async throws { throw ValidationError("not implemented yet") }
}
