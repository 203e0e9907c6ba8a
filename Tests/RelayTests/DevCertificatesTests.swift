// DevCertificates: files, permissions, reuse and renewal, checked with the real
// `openssl` command line (installed by scripts/setup.sh).

import Foundation
import Testing
@testable import RelayShared

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Development certificates")
struct DevCertificatesTests {
    @Test("creates the CA, server certificate and keys, keys with mode 0600")
    func createsFiles() throws {
        try withScratchDirectory { directory in
            let certificates = try DevCertificates.ensure(in: directory)
            #expect(certificates.directory == directory)
            for url in [certificates.caCertificate, certificates.serverCertificate] {
                #expect(try fileMode(url) == 0o644, "\(url.lastPathComponent)")
                #expect(try String(contentsOf: url, encoding: .utf8).hasPrefix("-----BEGIN CERTIFICATE-----\n"))
            }
            for url in [certificates.caKey, certificates.serverKey] {
                #expect(try fileMode(url) == 0o600, "\(url.lastPathComponent)")
                #expect(try String(contentsOf: url, encoding: .utf8).hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
            }
            #expect(certificates.caCertificate.lastPathComponent == "ca.pem")
            #expect(certificates.caKey.lastPathComponent == "ca-key.pem")
            #expect(certificates.serverCertificate.lastPathComponent == "server.pem")
            #expect(certificates.serverKey.lastPathComponent == "server-key.pem")
            // No temporary files left behind.
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path)
                .filter { $0.hasSuffix(".tmp") }
            #expect(leftovers.isEmpty)
        }
    }

    @Test("openssl verifies the chain and shows the names and extensions")
    func opensslAcceptsTheFiles() throws {
        try withScratchDirectory { directory in
            let certificates = try DevCertificates.ensure(
                in: directory, dnsNames: ["localhost", "relay.test"], ipAddresses: ["127.0.0.1", "::1"])
            let verify = try openssl([
                "verify", "-x509_strict", "-purpose", "sslserver",
                "-CAfile", certificates.caCertificate.path, certificates.serverCertificate.path,
            ])
            #expect(verify.status == 0, "\(verify.output)")
            #expect(verify.output.contains("OK"))

            let server = try openssl(["x509", "-noout", "-text", "-in", certificates.serverCertificate.path])
            #expect(server.status == 0, "\(server.output)")
            #expect(server.output.contains("DNS:localhost"))
            #expect(server.output.contains("DNS:relay.test"))
            #expect(server.output.contains("IP Address:127.0.0.1"))
            #expect(server.output.contains("IP Address:0:0:0:0:0:0:0:1") || server.output.contains("IP Address:::1"))
            #expect(server.output.contains("TLS Web Server Authentication"))
            #expect(server.output.contains("CA:FALSE"))
            #expect(server.output.contains("Digital Signature"))
            #expect(server.output.contains("prime256v1"))

            let ca = try openssl(["x509", "-noout", "-text", "-in", certificates.caCertificate.path])
            #expect(ca.status == 0, "\(ca.output)")
            #expect(ca.output.contains("X509v3 Basic Constraints: critical"))
            #expect(ca.output.contains("CA:TRUE"))
            #expect(ca.output.contains("Certificate Sign, CRL Sign"))

            // The keys belong to the certificates.
            for (certificate, key) in [
                (certificates.caCertificate, certificates.caKey),
                (certificates.serverCertificate, certificates.serverKey),
            ] {
                let fromCertificate = try openssl(["x509", "-noout", "-pubkey", "-in", certificate.path])
                let fromKey = try openssl(["pkey", "-pubout", "-in", key.path])
                #expect(fromCertificate.status == 0 && fromKey.status == 0)
                #expect(fromCertificate.output == fromKey.output, "\(key.lastPathComponent)")
            }
        }
    }

    @Test("serial numbers are random")
    func randomSerialNumbers() throws {
        try withScratchDirectory { directory in
            let certificates = try DevCertificates.ensure(in: directory)
            let ca = try openssl(["x509", "-noout", "-serial", "-in", certificates.caCertificate.path])
            let server = try openssl(["x509", "-noout", "-serial", "-in", certificates.serverCertificate.path])
            #expect(ca.status == 0 && server.status == 0)
            #expect(ca.output.hasPrefix("serial="))
            #expect(ca.output != server.output)
            #expect(ca.output.count >= "serial=".count + 32)  // 16 random bytes in hex
        }
    }

    @Test("a second ensure reuses the same files byte for byte")
    func reusesExistingFiles() throws {
        try withScratchDirectory { directory in
            let first = try DevCertificates.ensure(in: directory)
            let before = try contents(of: first)
            let second = try DevCertificates.ensure(in: directory)
            #expect(try contents(of: second) == before)
            // Names that are already covered (in any case, any order, a subset) also reuse.
            let third = try DevCertificates.ensure(in: directory, dnsNames: ["LOCALHOST."], ipAddresses: ["::1"])
            #expect(try contents(of: third) == before)
        }
    }

    @Test("a server certificate expiring within 30 days is replaced; the CA stays")
    func nearExpiryServerCertificateIsReplaced() throws {
        try withScratchDirectory { directory in
            // Issued 340 days ago: valid for 25 more days.
            let old = try DevCertificates.ensure(
                in: directory, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"],
                now: Date().addingTimeInterval(-340 * 86_400))
            let before = try contents(of: old)
            #expect(try openssl(["x509", "-noout", "-checkend", "\(30 * 86_400)", "-in", old.serverCertificate.path]).status != 0)

            let renewed = try DevCertificates.ensure(in: directory, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
            let after = try contents(of: renewed)
            #expect(after.ca == before.ca)
            #expect(after.caKey == before.caKey)
            #expect(after.server != before.server)
            #expect(after.serverKey != before.serverKey)
            #expect(try fileMode(renewed.serverKey) == 0o600)
            #expect(try openssl(["x509", "-noout", "-checkend", "\(300 * 86_400)", "-in", renewed.serverCertificate.path]).status == 0)
            let verify = try openssl(["verify", "-CAfile", renewed.caCertificate.path, renewed.serverCertificate.path])
            #expect(verify.status == 0, "\(verify.output)")
        }
    }

    @Test("an expired server certificate is replaced; the CA stays")
    func expiredServerCertificateIsReplaced() throws {
        try withScratchDirectory { directory in
            let old = try DevCertificates.ensure(
                in: directory, dnsNames: ["localhost"], ipAddresses: [],
                now: Date().addingTimeInterval(-400 * 86_400))
            let before = try contents(of: old)
            let expired = try openssl(["verify", "-CAfile", old.caCertificate.path, old.serverCertificate.path])
            #expect(expired.status != 0)
            #expect(expired.output.contains("expired"), "\(expired.output)")

            let renewed = try DevCertificates.ensure(in: directory, dnsNames: ["localhost"], ipAddresses: [])
            let after = try contents(of: renewed)
            #expect(after.ca == before.ca)
            #expect(after.caKey == before.caKey)
            #expect(after.server != before.server)
            let verify = try openssl(["verify", "-CAfile", renewed.caCertificate.path, renewed.serverCertificate.path])
            #expect(verify.status == 0, "\(verify.output)")
        }
    }

    @Test("names not covered by the server certificate replace it; the CA stays")
    func newNamesReplaceServerCertificate() throws {
        try withScratchDirectory { directory in
            let first = try DevCertificates.ensure(in: directory)
            let before = try contents(of: first)
            let second = try DevCertificates.ensure(
                in: directory, dnsNames: ["localhost", "relay.internal"], ipAddresses: ["127.0.0.1", "127.0.0.2"])
            let after = try contents(of: second)
            #expect(after.ca == before.ca)
            #expect(after.server != before.server)
            let text = try openssl(["x509", "-noout", "-text", "-in", second.serverCertificate.path])
            #expect(text.output.contains("DNS:relay.internal"))
            #expect(text.output.contains("IP Address:127.0.0.2"))
        }
    }

    @Test("missing or damaged server files are recreated")
    func damagedServerFilesAreRecreated() throws {
        try withScratchDirectory { directory in
            let certificates = try DevCertificates.ensure(in: directory)
            let before = try contents(of: certificates)
            try FileManager.default.removeItem(at: certificates.serverKey)
            _ = try DevCertificates.ensure(in: directory)
            let after = try contents(of: certificates)
            #expect(after.ca == before.ca)
            #expect(after.server != before.server)

            try Data("not a certificate".utf8).write(to: certificates.serverCertificate)
            _ = try DevCertificates.ensure(in: directory)
            let verify = try openssl(["verify", "-CAfile", certificates.caCertificate.path, certificates.serverCertificate.path])
            #expect(verify.status == 0, "\(verify.output)")
        }
    }

    @Test("a client certificate is signed by the same CA for client authentication")
    func clientCertificate() throws {
        try withScratchDirectory { directory in
            let certificates = try DevCertificates.ensure(in: directory)
            let (certificate, key) = try certificates.issueClientCertificate(commonName: "agent 1/test")
            #expect(certificate.lastPathComponent == "client-agent_1_test.pem")
            #expect(key.lastPathComponent == "client-agent_1_test-key.pem")
            #expect(try fileMode(key) == 0o600)
            let verify = try openssl([
                "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", certificates.caCertificate.path, certificate.path,
            ])
            #expect(verify.status == 0, "\(verify.output)")
            let subject = try openssl(["x509", "-noout", "-subject", "-in", certificate.path])
            #expect(subject.output.contains("CN = agent 1/test") || subject.output.contains("CN=agent 1/test"), "\(subject.output)")
            #expect(throws: DevCertificatesError.self) { try certificates.issueClientCertificate(commonName: "") }

            let plain = try certificates.issueClientCertificate(commonName: "agent-1")
            #expect(plain.certificate.lastPathComponent == "client-agent-1.pem")
            #expect(plain.key.lastPathComponent == "client-agent-1-key.pem")
            // A name ending in "-key" cannot overwrite agent-1's key file.
            let tricky = try certificates.issueClientCertificate(commonName: "agent-1-key")
            #expect(tricky.certificate.lastPathComponent == "client-agent-1-key_.pem")
        }
    }

    @Test("concurrent ensure calls on a fresh directory agree on one set of files")
    func concurrentEnsure() throws {
        try withScratchDirectory { directory in
            let results = ResultsBox()
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                results.append(Result { try contents(of: DevCertificates.ensure(in: directory)) })
            }
            let all = try results.values.map { try $0.get() }
            #expect(all.count == 4)
            #expect(Set(all.map(\.ca)).count == 1)
            #expect(Set(all.map(\.server)).count == 1)
            let verify = try openssl([
                "verify", "-CAfile", directory.appendingPathComponent("ca.pem").path,
                directory.appendingPathComponent("server.pem").path,
            ])
            #expect(verify.status == 0, "\(verify.output)")
        }
    }

    @Test("invalid names and a CA without its key are reported")
    func errors() throws {
        try withScratchDirectory { directory in
            #expect(throws: DevCertificatesError.self) {
                try DevCertificates.ensure(in: directory, dnsNames: ["bad name"])
            }
            #expect(throws: DevCertificatesError.self) {
                try DevCertificates.ensure(in: directory, dnsNames: [], ipAddresses: ["[::1]:443"])
            }
            #expect(throws: DevCertificatesError.self) {
                try DevCertificates.ensure(in: directory, dnsNames: [], ipAddresses: [])
            }
            #expect(throws: DevCertificatesError.self) {
                try DevCertificates(directory: directory).issueClientCertificate(commonName: "agent")
            }
            let certificates = try DevCertificates.ensure(in: directory)
            try FileManager.default.removeItem(at: certificates.caKey)
            do {
                _ = try DevCertificates.ensure(in: directory)
                Issue.record("ensure must not silently replace a CA whose key is missing")
            } catch let error as DevCertificatesError {
                #expect("\(error)".contains("ca-key.pem"))
            }
        }
    }
}

// MARK: - Helpers

private struct MaterialBytes: Equatable {
    var ca: Data
    var caKey: Data
    var server: Data
    var serverKey: Data
}

/// Collects results from concurrent closures.
private final class ResultsBox: @unchecked Sendable {  // `results` only under `lock`
    private let lock = NSLock()
    private var results: [Result<MaterialBytes, any Error>] = []
    var values: [Result<MaterialBytes, any Error>] { lock.withLock { results } }
    func append(_ result: Result<MaterialBytes, any Error>) { lock.withLock { results.append(result) } }
}

private func contents(of certificates: DevCertificates) throws -> MaterialBytes {
    MaterialBytes(
        ca: try Data(contentsOf: certificates.caCertificate),
        caKey: try Data(contentsOf: certificates.caKey),
        server: try Data(contentsOf: certificates.serverCertificate),
        serverKey: try Data(contentsOf: certificates.serverKey))
}

private func fileMode(_ url: URL) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
    return ((attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1) & 0o777
}

/// Runs `body` with a fresh directory under the temporary directory, removed afterwards.
private func withScratchDirectory(_ body: (URL) throws -> Void) throws {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("devcerts-\(UUID().uuidString)", isDirectory: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    try body(directory)
}

/// Runs `openssl` with `arguments` (stdin /dev/null, stdout and stderr together in a
/// temporary file) and returns its exit status and output; killed after `timeout`
/// seconds.
///
/// Avoids swift-corelibs-foundation `Process` pitfalls on Linux: `run()` is called
/// on a fresh thread with an empty signal mask (test threads block most signals,
/// which children would inherit), launches are serialized, and output goes to a
/// file rather than a pipe so nothing can block on a full pipe.
private func openssl(_ arguments: [String], timeout: Double = 30) throws -> (status: Int32, output: String) {
    let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("openssl-\(UUID().uuidString).out")
    guard FileManager.default.createFile(atPath: outputURL.path, contents: nil) else {
        throw OpenSSLRunError("cannot create \(outputURL.path)")
    }
    defer { try? FileManager.default.removeItem(at: outputURL) }
    let output = try FileHandle(forWritingTo: outputURL)
    defer { try? output.close() }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["openssl"] + arguments
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = output
    process.standardError = output
    let exited = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in exited.signal() }
    try OpenSSLLauncher.run(process)
    if exited.wait(timeout: .now() + timeout) == .timedOut {
        kill(process.processIdentifier, SIGKILL)
        _ = exited.wait(timeout: .now() + 5)
        throw OpenSSLRunError("`openssl \(arguments.joined(separator: " "))` did not finish within \(timeout)s")
    }
    let text = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
    if process.terminationStatus == 127 {
        throw OpenSSLRunError("openssl is not installed; run scripts/setup.sh (or apt-get install openssl)\n\(text)")
    }
    return (process.terminationStatus, text)
}

private struct OpenSSLRunError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

private enum OpenSSLLauncher {
    private static let lock = NSLock()

    static func run(_ process: Process) throws {
        final class Outcome: @unchecked Sendable {  // written by the thread before `done` is signalled
            var error: (any Error)?
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var empty = sigset_t()
            sigemptyset(&empty)
            pthread_sigmask(SIG_SETMASK, &empty, nil)
            lock.withLock {
                do { try process.run() } catch { outcome.error = error }
            }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = outcome.error {
            throw OpenSSLRunError("cannot start openssl via /usr/bin/env: \(error)")
        }
    }
}
