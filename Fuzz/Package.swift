// swift-tools-version:6.0
// Coverage-guided fuzz targets (libFuzzer) for Relay's parsers of outside input. Kept out of
// the root package so the main build and test suite stay untouched. Build and run with
// scripts/fuzz.sh; see README.md "Fuzzing".
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name, which depends on where the repository
// was cloned: derive it instead of spelling it.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let relay = root.lastPathComponent.lowercased()

let package = Package(
    name: "RelayFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
    ],
    targets: [
        // One executable for every target (one sanitized link instead of nine); the target is
        // picked with RELAY_FUZZ_TARGET, since libFuzzer owns the command line.
        .executableTarget(
            name: "RelayFuzz",
            dependencies: [
                .product(name: "ArtifactMirror", package: relay),
                .product(name: "RelayServer", package: relay),
                .product(name: "RelayAgent", package: relay),
                .product(name: "Wire", package: relay),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
