import ArgumentParser

/// `relay-server bundle …`: offline transfer (air gap). `export` writes a signed bundle for
/// one agent; `import` stores a status bundle an agent wrote.
struct Bundle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Carry artifacts to an agent without a network path, and its status back (signed bundles).",
        subcommands: [BundleExport.self, BundleImport.self])
}
