import Foundation
import Provenance
import Testing
import Wire

/// Artifacts over the air gap (relay → agent): `relay-server bundle export` writes a signed OCI
/// layout tar, standard tools read it, `relay-agent import` (or the running agent's inbox)
/// verifies everything before publishing. Real processes: relay-server, relay-agent, skopeo.
@Suite struct BundleTests {
    /// The status-bundle setup (relay with agents `edge` and `other`, offline agent configs),
    /// with the relay's public key trusted by the offline agents.
    final class Setup: @unchecked Sendable {
        let base: StatusBundleTests.Setup
        let relayPublicKey: String
        var dir: TemporaryDirectory { base.dir }
        var harness: RelayHarness { base.harness }

        init(_ prefix: String, repoFiles: [String: Data] = [:], ghostSource: Bool = false) throws {
            base = try StatusBundleTests.Setup(prefix) { dir, harness in
                // A source that can never be packaged (its repository does not exist).
                if ghostSource { harness.relayExtraYAML = "  - {name: ghost, url: \(dir.appending("no-such-repo").path), ref: {branch: main}, interval: 1h}\n" }
                guard !repoFiles.isEmpty else { return }
                for (path, data) in repoFiles { try harness.sources[0].repo.write(path, data) }
                _ = try harness.sources[0].repo.commit("more files")
            }
            relayPublicKey = base.dir.appending("relay.pub").path
            try Data(try base.relay(["keys", "public"]).stdout.utf8).write(to: URL(fileURLWithPath: relayPublicKey))
            try agentConfig("edge")
            try agentConfig("other")
            try harness.waitUntil("podinfo packaged") { try packaged()["digest"] != nil }
        }

        @discardableResult
        func agentConfig(_ name: String, extra: String = "") throws -> String {
            try base.offlineAgentConfig(name, extra: "trust: {relayPublicKeys: [\(relayPublicKey)]}\n" + extra)
        }

        func config(_ name: String) -> String { dir.appending("offline-\(name).yaml").path }

        /// The newest packaged revision of podinfo, as the status API lists it.
        func packaged() throws -> [String: Any] {
            (try JSONSerialization.jsonObject(with: base.get("/api/v1/sources/podinfo/revisions").body) as? [[String: Any]])?.first ?? [:]
        }

        /// `relay-server bundle export`: exit status and its JSON.
        func export(_ agent: String = "edge", _ name: String, _ extra: [String] = []) throws -> (status: Int32, json: [String: Any], path: String) {
            let path = dir.appending(name).path
            let output = try base.relay(["bundle", "export", "--agent", agent, "--output", path] + extra, allowFailure: true)
            return (output.status, (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]) ?? [:], path)
        }

        /// `relay-agent import`: exit status and its JSON.
        func importBundle(_ paths: [String], agent: String = "edge", extra: [String] = []) throws -> (status: Int32, json: [String: Any]) {
            let output = try base.agent(["import", "--config", config(agent)] + extra + paths, allowFailure: true)
            return (output.status, (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]) ?? [:])
        }

        func published(_ agent: String = "edge") throws -> [RelayHarness.Published] {
            try JSONDecoder().decode([RelayHarness.Published].self, from: Data(try base.agent(["list", "--config", config(agent), "--json"]).stdout.utf8))
        }
    }

    /// The entries of a (small) bundle tar, read back with the same reader the agent uses.
    static func entries(_ path: String) throws -> [(name: String, data: Data)] {
        let reader = PartedTarReader(paths: [path])
        var result: [(String, Data)] = []
        while let entry = try reader.nextEntry() { result.append((entry.name, try reader.readData(size: entry.size, limit: 64 << 20))) }
        return result
    }

    /// Byte offset of entry `name`'s content in a tar.
    static func offset(of name: String, in path: String) throws -> Int {
        var offset = 0
        for entry in try entries(path) {
            if entry.name == name { return offset + 512 }
            offset += 512 + (entry.data.count + 511) / 512 * 512
        }
        throw BundleTestError.noEntry(name)
    }

    static func copy(_ path: String, to name: String, in dir: TemporaryDirectory, flipping offset: Int? = nil) throws -> String {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        if let offset { data[offset] ^= 0x01 }
        let target = dir.appending(name).path
        try data.write(to: URL(fileURLWithPath: target))
        return target
    }

    @Test func anExportedBundleIsReadBySkopeoImportedByAnOfflineAgentAndServedWithItsSignature() throws {
        let setup = try Setup("bundle-roundtrip")
        defer { setup.base.shutdown() }
        let skopeo = try #require(findExecutable("skopeo"), "skopeo is installed by scripts/setup.sh")
        let packaged = try setup.packaged()
        let digest = try #require(packaged["digest"] as? String)
        let revision = try #require(packaged["revision"] as? String)

        let exported = try setup.export("edge", "edge-1.tar")
        #expect(exported.status == 0, "\(exported.json)")
        #expect(exported.json["sequence"] as? Int == 1)
        #expect(exported.json["included"] as? [String] == ["podinfo@\(revision)"])

        // Standard tools read the layout: skopeo inspect and copy by the source's name.
        let raw = try runProcess(skopeo, ["inspect", "--raw", "oci-archive:\(exported.path):podinfo"])
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as? [String: Any])
        #expect(((manifest["layers"] as? [[String: Any]])?.first?["digest"] as? String) == digest)
        let manifestDigest = SHA256Digest(of: Data(raw.stdout.utf8)).description
        // (Plain `skopeo inspect` refuses every Flux artifact, from a registry too: containers/image
        // parses only image configs. `--raw` and `copy` are what a site needs.)
        let copied = setup.dir.appending("skopeo-dir")
        _ = try runProcess(skopeo, ["copy", "oci-archive:\(exported.path):podinfo", "dir:\(copied.path)"], timeout: 120)
        let relayFile = setup.dir.appending("relay-data/store/artifacts/sha256/\(digest.dropFirst(7)).tar.gz")
        #expect(try Data(contentsOf: copied.appendingPathComponent(String(digest.dropFirst(7)))) == Data(contentsOf: relayFile))
        // The cosign signature manifest is in the layout under its `.sig` tag.
        let sigTag = "sha256-\(manifestDigest.dropFirst(7)).sig"
        let sig = try runProcess(skopeo, ["inspect", "--raw", "oci-archive:\(exported.path):\(sigTag)"])
        #expect(sig.stdout.contains(CosignSignature.payloadMediaType))

        // The offline agent imports it and serves it, with the signature, to OCI clients.
        let imported = try setup.importBundle([exported.path])
        #expect(imported.status == 0, "\(imported.json)")
        #expect(imported.json["sequence"] as? Int == 1)
        #expect(try setup.published().map(\.digest) == [digest])
        #expect(!FileManager.default.fileExists(atPath: setup.dir.appending("agent-edge/bundles/tmp").path))

        let port = try LoopbackPort.free()
        try Data("event-key\n".utf8).write(to: setup.dir.appending("events.key"))
        let config = try setup.agentConfig("edge", extra: "listen: 127.0.0.1:\(port)\nflux: {events: {hmacTokenFile: \(setup.dir.appending("events.key").path)}}\n")
        let agent = try BackgroundProcess(name: "relay-agent-edge", executable: Binaries.relayAgent, arguments: ["run", "--config", config],
                                          logFile: setup.dir.appending("agent-edge.log"))
        defer { agent.stop() }
        try setup.harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        let served = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "docker://127.0.0.1:\(port)/podinfo:latest"])
        #expect(served.stdout == raw.stdout, "the agent serves the manifest the relay signed")
        let servedSig = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "docker://127.0.0.1:\(port)/podinfo:\(sigTag)"])
        #expect(servedSig.stdout == sig.stdout)

        // While it runs: the next bundle goes through its inbox (the CLI finds the running agent).
        let second = try setup.export("edge", "edge-2.tar")
        let viaInbox = try setup.importBundle([second.path])
        #expect(viaInbox.status == 0, "\(viaInbox.json)")
        #expect(viaInbox.json["sequence"] as? Int == 2)
        // A replayed bundle dropped in the inbox: rejected with its reason, the agent keeps serving.
        let inbox = setup.dir.appending("agent-edge/inbox")
        _ = try Self.copy(exported.path, to: ".replay.tar.tmp", in: setup.dir)
        #expect(rename(setup.dir.appending(".replay.tar.tmp").path, inbox.appendingPathComponent("replay.tar").path) == 0)
        let resultFile = inbox.appendingPathComponent("replay.tar.result.json")
        try setup.harness.waitUntil("inbox result", timeout: 15) { FileManager.default.fileExists(atPath: resultFile.path) }
        let result = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: resultFile)) as? [String: Any])
        #expect(result["ok"] as? Bool == false)
        #expect(result["code"] as? String == "replayed")
        #expect(FileManager.default.fileExists(atPath: inbox.appendingPathComponent("rejected/replay.tar").path))
        let metrics = try MetricsAndLogsTests.scrape("http://127.0.0.1:\(port)/metrics")
        #expect(metrics["relay_agent_bundles_imported_total"] == 1)
        #expect(metrics["relay_agent_bundles_rejected_total{reason=\"replayed\"}"] == 1)
        #expect(try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200)
        #expect(try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "docker://127.0.0.1:\(port)/podinfo:latest"]).stdout == raw.stdout)
    }

    @Test func aDeltaBundleSinceTheAgentsStatusBundleLeavesOutWhatItHoldsAndCarriesTheAcknowledgement() throws {
        let setup = try Setup("bundle-delta")
        defer { setup.base.shutdown() }
        let first = try setup.export("edge", "full.tar")
        #expect(try setup.importBundle([first.path]).status == 0)
        // The agent's status bundle (what it holds, its journal) reaches the relay.
        try setup.base.relay(["agents", "trust", "edge", try setup.base.publicKey("edge")])
        let (status, statusSummary) = try setup.base.exportStatus("edge")
        let journalEntries = try #require(statusSummary["entries"] as? Int)
        #expect(journalEntries >= 1, "the import is journaled for the relay")
        #expect(try setup.base.importBundle(status).status == 0)

        let delta = try setup.export("edge", "delta.tar", ["--since", status])
        #expect(delta.status == 0, "\(delta.json)")
        #expect((delta.json["included"] as? [String])?.isEmpty == true)
        #expect((delta.json["omitted"] as? [String])?.count == 1)
        #expect(delta.json["kind"] as? String == "delta")
        #expect((delta.json["statusAck"] as? [String: Any])?["upTo"] as? Int == journalEntries)
        #expect(try #require(delta.json["bytes"] as? Int) < (try #require(first.json["bytes"] as? Int)), "no layer blob")
        let imported = try setup.importBundle([delta.path])
        #expect(imported.status == 0, "\(imported.json)")
        #expect(imported.json["held"] as? Int == 1)
        #expect(imported.json["acknowledged"] as? Int == journalEntries)
        // The journal was trimmed: only what happened since (this import) is left to send.
        #expect(try setup.base.exportStatus("edge").summary["entries"] as? Int == 1)

        // A new revision: the next delta carries it.
        let repo = setup.harness.sources[0].repo
        try repo.write("app.yaml", "a: 2\n")
        _ = try repo.commit("second")
        let old = try #require(try setup.packaged()["digest"] as? String)
        try setup.harness.pushWebhook(source: setup.harness.sources[0])
        try setup.harness.waitUntil("second revision packaged") { try setup.packaged()["digest"] as? String != old }
        let next = try setup.export("edge", "delta-2.tar", ["--since", status])
        #expect((next.json["included"] as? [String])?.count == 1, "\(next.json)")
        #expect(try setup.importBundle([next.path]).status == 0)
        #expect(try setup.published().first?.digest == (try setup.packaged()["digest"] as? String))

        // --since with another agent's status bundle: refused.
        let wrong = try setup.export("other", "wrong.tar", ["--since", status])
        #expect(wrong.status == 3)
        #expect(["no_trusted_key", "bad_signature", "wrong_agent"].contains(wrong.json["code"] as? String ?? ""), "\(wrong.json)")
        // A delta imported where the left-out artifact is not held: refused, not_held.
        try setup.base.offlineAgentConfig("edge", dataDir: setup.dir.appending("agent-edge-fresh").path,
                                          extra: "trust: {relayPublicKeys: [\(setup.relayPublicKey)]}\n")
        let fresh = try setup.importBundle([delta.path])
        #expect(fresh.json["code"] as? String == "not_held", "\(fresh.json)")
        #expect(try setup.published().isEmpty)
    }

    @Test func tamperedReplayedExpiredForeignAndIncompleteBundlesAreRefusedAndNothingIsPublished() throws {
        // 2.5 MB that gzip cannot shrink: the bundle splits into 1 MiB parts.
        var random = SystemRandomNumberGenerator()
        let noise = Data((0..<(2_500_000 / 8)).flatMap { _ in withUnsafeBytes(of: random.next() as UInt64) { Array($0) } })
        let setup = try Setup("bundle-tamper", repoFiles: ["blob.bin": noise], ghostSource: true)
        defer { setup.base.shutdown() }
        let digest = try #require(setup.packaged()["digest"] as? String)

        let genuine = try setup.export("edge", "genuine.tar")
        #expect(genuine.status == 0, "\(genuine.json)")
        let foreign = try setup.export("other", "foreign.tar")
        let expiring = try setup.export("edge", "expiring.tar", ["--expires-in", "1ms"])
        let split = try setup.export("edge", "split.tar", ["--max-size", "1MiB"])
        #expect(split.json["parts"] as? Int == 3, "\(split.json)")
        #expect(try setup.export("edge", "tiny.tar", ["--max-size", "4096"]).json["code"] as? String == "max_size_too_small")
        // Refused exports: each with its code, exit 3, no file.
        try setup.base.relay(["agents", "create", "lonely"])
        try setup.base.relay(["agents", "create", "haunted", "--sources", "ghost"])
        for (agent, code) in [("nobody", "unknown_agent"), ("lonely", "no_grants"), ("haunted", "not_packaged")] {
            let refused = try setup.export(agent, "\(agent).tar")
            #expect(refused.status == 3 && refused.json["code"] as? String == code, "\(agent): \(refused.json)")
            #expect(!FileManager.default.fileExists(atPath: refused.path))
        }

        let tar = genuine.path
        let dir = setup.dir
        let statementAt = try Self.offset(of: BundleLayout.statementPath, in: tar)
        let indexAt = try Self.offset(of: BundleLayout.indexPath, in: tar)
        let layerAt = try Self.offset(of: "blobs/sha256/\(digest.dropFirst(7))", in: tar)
        // Signed by another key: the same statement, a genuine-looking signature file.
        let stranger = try SigningKey.loadOrCreate(path: dir.appending("stranger.key").path).key
        var entries = try Self.entries(tar)
        let statement = entries[1].data
        entries[2].data = BundleLayout.Signature(keyID: stranger.publicKey.id, signature: stranger.sign(statement).base64EncodedString()).encoded()
        let resigned = dir.appending("resigned.tar").path
        let sizes = entries.map { UInt64($0.data.count) }
        let writer = PartedTarWriter(output: resigned, parts: BundleParts(count: 1, partBytes: 0, totalBytes: TarFormat.archiveSize(entrySizes: sizes)))
        try writer.write(entries.map { TarEntry(name: $0.name, data: $0.data) })
        try writer.finish()
        // A file the statement does not list (the Flux config blob under another name: same size).
        let unlisted = dir.appending("unlisted.tar").path
        let renamed = try Self.entries(tar).map { entry in
            TarEntry(name: entry.data == OCIManifest.configBytes ? "blobs/sha256/" + String(repeating: "0", count: 64) : entry.name, data: entry.data)
        }
        let unlistedWriter = PartedTarWriter(output: unlisted, parts: BundleParts(count: 1, partBytes: 0, totalBytes: TarFormat.archiveSize(entrySizes: sizes)))
        try unlistedWriter.write(renamed)
        try unlistedWriter.finish()
        // A part missing from the split bundle.
        try FileManager.default.moveItem(atPath: split.path + ".002", toPath: dir.appending("aside.002").path)
        // The expiring bundle expired 1 ms after it was made.

        let cases: [(String, [String], String)] = [
            ("statement byte", [try Self.copy(tar, to: "flip-statement.tar", in: dir, flipping: statementAt + 40)], "bad_signature"),
            ("index byte", [try Self.copy(tar, to: "flip-index.tar", in: dir, flipping: indexAt + 20)], "digest_mismatch"),
            ("layer byte", [try Self.copy(tar, to: "flip-layer.tar", in: dir, flipping: layerAt + 1000)], "digest_mismatch"),
            ("another key", [resigned], "bad_signature"),
            ("unlisted file", [unlisted], "unlisted_file"),
            ("another agent", [foreign.path], "wrong_agent"),
            ("expired", [expiring.path], "expired"),
            ("part missing", [split.path], "missing_part"),
        ]
        for (what, paths, code) in cases {
            let refused = try setup.importBundle(paths)
            #expect(refused.status == 3, "\(what): \(refused.json)")
            #expect(refused.json["code"] as? String == code, "\(what): \(refused.json)")
            #expect(try setup.published().isEmpty, "\(what): nothing published")
        }
        // A flipped byte anywhere: headers, contents, padding, the end blocks.
        let size = Int(try #require(genuine.json["bytes"] as? Int))
        var offsets = Array(stride(from: 0, to: size, by: size / 16)) + [size - 1, size - 600]
        var position = 0
        for entry in try Self.entries(tar) {
            position += 512 + (entry.data.count + 511) / 512 * 512
            if entry.data.count % 512 != 0 { offsets.append(position - 1) }  // the entry's last padding byte
        }
        for offset in offsets {
            let refused = try setup.importBundle([try Self.copy(tar, to: "flip-\(offset).tar", in: dir, flipping: offset)])
            #expect(refused.status == 3 && !(refused.json["code"] as? String ?? "").isEmpty, "byte \(offset): \(refused.json)")
        }
        #expect(try setup.published().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir.appending("agent-edge/bundles/state.json").path))
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: dir.appending("agent-edge/bundles").path)) ?? []
        #expect(leftovers.isEmpty, "temporary files removed: \(leftovers)")

        // The split bundle with all its parts imports; then the older ones are replays.
        try FileManager.default.moveItem(atPath: dir.appending("aside.002").path, toPath: split.path + ".002")
        let imported = try setup.importBundle([split.path])
        #expect(imported.status == 0, "\(imported.json)")
        #expect(try setup.published().map(\.digest) == [digest])
        for old in [genuine.path, expiring.path] {
            #expect(try setup.importBundle([old], extra: ["--allow-expired"]).json["code"] as? String == "replayed")
        }
        // A running agent imports a split bundle dropped in its inbox only once every part is there.
        let dropped = try setup.export("edge", "dropped.tar", ["--max-size", "1MiB"])
        let agent = try BackgroundProcess(name: "relay-agent-edge", executable: Binaries.relayAgent, arguments: ["run", "--config", setup.config("edge")],
                                          logFile: dir.appending("agent-edge.log"))
        defer { agent.stop() }
        let inbox = dir.appending("agent-edge/inbox")
        try setup.harness.waitUntil("inbox watched") { FileManager.default.fileExists(atPath: inbox.path) }
        func drop(_ part: String) throws {
            let name = URL(fileURLWithPath: dropped.path + part).lastPathComponent
            try FileManager.default.copyItem(atPath: dropped.path + part, toPath: inbox.appendingPathComponent(".\(name).tmp").path)
            try FileManager.default.moveItem(atPath: inbox.appendingPathComponent(".\(name).tmp").path, toPath: inbox.appendingPathComponent(name).path)
        }
        try drop(".001")
        try drop(".002")
        let result = inbox.appendingPathComponent("dropped.tar.result.json")
        Thread.sleep(forTimeInterval: 2.5)
        #expect(!FileManager.default.fileExists(atPath: result.path), "waits for the missing part")
        try drop(".003")
        try setup.harness.waitUntil("split bundle imported from the inbox", timeout: 15) { FileManager.default.fileExists(atPath: result.path) }
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: result)) as? [String: Any])
        #expect(answer["ok"] as? Bool == true, "\(answer)")
        #expect(((answer["imported"] as? [String: Any])?["sequence"] as? Int) == (dropped.json["sequence"] as? Int))
        #expect(FileManager.default.fileExists(atPath: inbox.appendingPathComponent("done/dropped.tar.003").path))
        agent.stop()

        // An expired bundle imported on purpose: accepted, and reported up as a status incident.
        let late = try setup.export("edge", "late.tar", ["--expires-in", "1ms"])
        #expect(try setup.importBundle([late.path]).json["code"] as? String == "expired")
        let overridden = try setup.importBundle([late.path], extra: ["--allow-expired"])
        #expect(overridden.status == 0, "\(overridden.json)")
        #expect(overridden.json["expiredAccepted"] as? Bool == true)
        let statusFile = try setup.base.exportStatus("edge").path
        let statusStatement = try JSONDecoder().decode(StatusStatement.self, from: try StatusBundleFile.read(path: statusFile).statement)
        let reasons = try Relay_V1_StatusBatch(serializedBytes: statusStatement.statusBatch).entries.map(\.event.reason)
        #expect(reasons.contains("BundleExpiredAccepted"))
        #expect(reasons.contains("BundleRefused"))
        #expect(reasons.last == "BundleImported")

        // Without trust in agent.yaml: a config error that says what to set.
        try setup.base.offlineAgentConfig("edge")
        let untrusted = try setup.importBundle([tar])
        #expect(untrusted.status == 2)
        #expect(untrusted.json["code"] as? String == "trust_required")
    }

    /// The inbox takes bundles, never commands: a request file dropped there (a drop box or a
    /// data diode writes the inbox) is not run. And an unreadable import record never reads as
    /// "nothing imported yet" (which would let any old bundle in).
    @Test func theInboxRunsNoCommandsAndAnUnreadableImportRecordRefusesImports() throws {
        let setup = try Setup("bundle-inbox-commands")
        defer { setup.base.shutdown() }
        let first = try setup.export("edge", "first.tar")
        let second = try setup.export("edge", "second.tar")
        #expect(try setup.importBundle([first.path]).status == 0)

        let port = try LoopbackPort.free()
        let config = try setup.agentConfig("edge", extra: "listen: 127.0.0.1:\(port)\n")
        let agent = try BackgroundProcess(name: "relay-agent-edge", executable: Binaries.relayAgent, arguments: ["run", "--config", config],
                                          logFile: setup.dir.appending("agent-edge.log"))
        defer { agent.stop() }
        try setup.harness.waitUntil("agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        let inbox = setup.dir.appending("agent-edge/inbox")
        let target = setup.dir.appending("agent-edge/bundles/state.json")
        let before = try Data(contentsOf: target)
        let staged = setup.dir.appending("x.export-status.json")
        try Data(#"{"output": "\#(target.path)"}"#.utf8).write(to: staged)
        #expect(rename(staged.path, inbox.appendingPathComponent("x.export-status.json").path) == 0)
        let result = inbox.appendingPathComponent("x.export-status.json.result.json")
        try setup.harness.waitUntil("the dropped request handled", timeout: 15) { FileManager.default.fileExists(atPath: result.path) }
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: result)) as? [String: Any])
        #expect(answer["ok"] as? Bool == false, "\(answer)")
        #expect(try Data(contentsOf: target) == before, "the request was not run: the import record is untouched")
        // The CLI's own requests still work (through the private request directory).
        let exported = try setup.base.exportStatus("edge")
        #expect(exported.summary["agent"] as? String == "edge")
        agent.stop()

        // A damaged import record: refused, nothing published, rather than starting again at 0.
        try Data("{not json".utf8).write(to: target)
        let refused = try setup.importBundle([second.path])
        #expect(refused.status == 3, "\(refused.json)")
        #expect(refused.json["code"] as? String == "state_unreadable")
        #expect(try setup.published().count == 1)
    }
}

enum BundleTestError: Error { case noEntry(String) }
