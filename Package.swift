// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Relay",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "artifact-mirror", targets: ["ArtifactMirrorCLI"]),
        .library(name: "ArtifactMirror", targets: ["ArtifactMirror"]),
        .library(name: "Wire", targets: ["Wire"]),
        .library(name: "RelayServer", targets: ["RelayServer"]),
        .library(name: "RelayAgent", targets: ["RelayAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // System libraries (installed by scripts/setup.sh).
        .systemLibrary(
            name: "CLibGit2",
            pkgConfig: "libgit2",
            providers: [.apt(["libgit2-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),

        // The protocol between relay-server and relay-agent.
        .target(name: "Wire"),

        // git → Flux-compatible artifact.
        .target(
            name: "ArtifactMirror",
            dependencies: [
                "CLibGit2",
                "CZlib",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "ArtifactMirrorCLI",
            dependencies: [
                "ArtifactMirror",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .target(name: "RelayServer", dependencies: ["Wire", "ArtifactMirror"]),
        .target(name: "RelayAgent", dependencies: ["Wire", "ArtifactMirror"]),

        .testTarget(
            name: "ArtifactMirrorTests",
            dependencies: [
                "ArtifactMirror",
                "ArtifactMirrorCLI",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "WireTests", dependencies: ["Wire"]),
    ],
    swiftLanguageModes: [.v6]
)
