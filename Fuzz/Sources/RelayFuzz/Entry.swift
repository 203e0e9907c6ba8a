import Foundation

/// The fuzz targets, by the name `RELAY_FUZZ_TARGET` selects (scripts/fuzz.sh sets it).
let targets: [String: @Sendable (Data) -> Void] = [
    "tarball": TarballTarget.run,
    "ignore": IgnoreTarget.run,
    "semver": SemVerTarget.run,
    "oci-route": OCIRouteTarget.run,
    "gitlab-webhook": GitLabWebhookTarget.run,
    "flux-event": FluxEventTarget.run,
    "flux-status": FluxStatusTarget.run,
    "status-journal": StatusJournalTarget.run,
    "relay-config": ConfigTarget.runServer,
    "agent-config": ConfigTarget.runAgent,
    "bundle": BundleTarget.run,
]

/// Chosen once: libFuzzer owns the command line, so the target comes from the environment.
let selected: @Sendable (Data) -> Void = {
    let name = ProcessInfo.processInfo.environment["RELAY_FUZZ_TARGET"] ?? ""
    guard let target = targets[name] else {
        let known = targets.keys.sorted().joined(separator: " ")
        FileHandle.standardError.write(Data("relay-fuzz: set RELAY_FUZZ_TARGET to one of: \(known)\n".utf8))
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected(data.map { Data(bytes: $0, count: size) } ?? Data())
    return 0
}

/// SwiftPM links an executable with `main` renamed to `<module>_main` (so tests can link it),
/// which hides libFuzzer's own `main`: this one hands over to libFuzzer's documented driver.
@_cdecl("RelayFuzz_main")
func relayFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzz)
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// An invariant of the parser under test; a violation is a crash libFuzzer keeps the input of.
func require(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if !condition { fatalError("invariant violated: \(message())", file: file, line: line) }
}

/// A private directory for targets that parse files (memory-backed when /dev/shm exists),
/// removed at exit (or by the next run, after a crash).
let scratchDirectory: URL = {
    // Directories of runs that crashed (atexit never ran) go first.
    let base = URL(fileURLWithPath: scratchPath()).deletingLastPathComponent()
    for name in (try? FileManager.default.contentsOfDirectory(atPath: base.path)) ?? [] where name.hasPrefix("relay-fuzz-") {
        if let pid = Int32(name.dropFirst("relay-fuzz-".count)), kill(pid, 0) != 0, errno == ESRCH {
            try? FileManager.default.removeItem(at: base.appendingPathComponent(name))
        }
    }
    let url = URL(fileURLWithPath: scratchPath())
    try? FileManager.default.removeItem(at: url)
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: scratchPath()) }
    return url
}()

private func scratchPath() -> String {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    return base + "/relay-fuzz-\(getpid())"
}

func scratchFile(_ name: String) -> String {
    scratchDirectory.appendingPathComponent(name).path
}
