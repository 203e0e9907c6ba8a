import Foundation
import Testing

/// The relay's dataDir on a small tmpfs that is then filled: the tunnel answers with a status
/// that names the cause, agents keep retrying, and everything resumes once space is freed.
@Suite(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
struct RelayDiskFullTests {
    @Test func aFullDiskIsUnavailableWithItsCauseAndAgentsRecoverWhenSpaceIsFreed() throws {
        let (dir, _, harness) = try RelayHarness.single("disk-full")
        let dataDir = dir.appending("relay-data")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", dataDir.path])
        defer {
            harness.shutdown()
            _ = try? runProcess("/bin/umount", [dataDir.path], allowFailure: true)
            dir.remove()
        }
        try harness.startRelay()
        try harness.waitUntilPackaged("podinfo")
        let client = try InteropClient(harness: harness)

        // Fill the disk to the last block.
        let filler = dataDir.appendingPathComponent("filler")
        for blockSize in ["1M", "4k"] {
            _ = try runProcess("/bin/dd", ["if=/dev/zero", "of=\(filler.path)", "bs=\(blockSize)", "oflag=append", "conv=notrunc"],
                               allowFailure: true)
        }
        let refused = try client.run(token: "t-edge")
        #expect(refused.errorCode == "UNAVAILABLE", "\(refused.json)")
        #expect(refused.errorDetails.contains("disk full") && refused.errorDetails.contains(dataDir.lastPathComponent),
                "\(refused.json)")
        let metricsPort = try harness.serveFlux("edge")
        try harness.startAgent("edge")  // keeps retrying meanwhile, and counts why
        try harness.waitUntil("the agent counts the relay as unavailable") {
            try MetricsAndLogsTests.scrape("http://127.0.0.1:\(metricsPort)/metrics")[
                #"relay_agent_tunnel_errors_total{reason="relay_unavailable"}"#] ?? 0 >= 1
        }
        #expect(try harness.published("edge").isEmpty)

        try FileManager.default.removeItem(at: filler)
        let accepted = try client.run(token: "t-edge")
        #expect(accepted.status == 0, "\(accepted.json)")
        try harness.waitUntil("the agent synced once space was freed", timeout: 15) { try !harness.published("edge").isEmpty }
    }
}
