import ArgumentParser

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The relay's signing keys (not yet built).")
    func run() async throws { throw ValidationError("not implemented yet") }
}
