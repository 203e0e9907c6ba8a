import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import RelayShared
import Synchronization
import SwiftASN1
import X509

/// Explains a relay certificate that TLS refused. BoringSSL says only "certificate verify
/// failed"; this connects once more, takes the chain the relay presents (the handshake is then
/// aborted: nothing else is sent) and checks it against `caFile` and the dialled name, to say
/// which check failed. Verification itself stays with TLS: this only explains a refusal.
enum RelayCertificateCheck {
    enum Problem: Equatable, Sendable {
        case expired(subject: String, notValidAfter: Date)
        case notYetValid(subject: String, notValidBefore: Date)
        case unknownCA(issuer: String)
        case nameMismatch(names: [String])
        case noCertificate
    }

    /// What is wrong with the certificate `relay` presents, or nil when nothing could be found
    /// (unreachable, or a chain these checks accept).
    static func diagnose(relay: HostPort, caFile: String) async -> Problem? {
        guard let chain = await presentedChain(relay: relay) else { return nil }
        return await check(chain: chain, relay: relay, caFile: caFile, now: Date())
    }

    static func check(chain: [Certificate], relay: HostPort, caFile: String, now: Date) async -> Problem? {
        guard let leaf = chain.first else { return .noCertificate }
        if let old = chain.first(where: { $0.notValidAfter < now }) {
            return .expired(subject: "\(old.subject)", notValidAfter: old.notValidAfter)
        }
        if let early = chain.first(where: { $0.notValidBefore > now }) {
            return .notYetValid(subject: "\(early.subject)", notValidBefore: early.notValidBefore)
        }
        let roots = CertificateStore(trustRoots(caFile))
        let intermediates = CertificateStore(chain.dropFirst())
        var chainCheck = Verifier(rootCertificates: roots) { RFC5280Policy(validationTime: now) }
        if case .couldNotValidate = await chainCheck.validate(leaf: leaf, intermediates: intermediates) {
            return .unknownCA(issuer: "\(leaf.issuer)")
        }
        let isAddress = relay.host.contains(":") || relay.host.allSatisfy { $0.isNumber || $0 == "." }
        var nameCheck = Verifier(rootCertificates: roots) {
            ServerIdentityPolicy(serverHostname: isAddress ? nil : relay.host, serverIP: isAddress ? relay.host : nil)
        }
        if case .couldNotValidate = await nameCheck.validate(leaf: leaf, intermediates: intermediates) {
            return .nameMismatch(names: names(of: leaf))
        }
        return nil
    }

    /// The DNS names and IP addresses a certificate names.
    static func names(of certificate: Certificate) -> [String] {
        guard let sans = try? certificate.extensions.subjectAlternativeNames else { return [] }
        return sans.compactMap { name -> String? in
            switch name {
            case .dnsName(let dns): return dns
            case .ipAddress(let bytes): return address(Array(bytes.bytes))
            default: return nil
            }
        }
    }

    private static func address(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map { String($0) }.joined(separator: ".") }
        var groups: [String] = []
        for index in stride(from: 0, to: bytes.count - 1, by: 2) {
            let group: Int = Int(bytes[index]) << 8 | Int(bytes[index + 1])
            groups.append(String(group, radix: 16))
        }
        return groups.joined(separator: ":")
    }

    /// The certificates in a PEM bundle (unreadable entries are skipped).
    static func trustRoots(_ caFile: String) -> [Certificate] {
        guard let text = try? String(contentsOfFile: caFile, encoding: .utf8),
              let documents = try? PEMDocument.parseMultiple(pemString: text) else { return [] }
        return documents.compactMap { try? Certificate(pemDocument: $0) }
    }

    /// The chain the relay presents, taken during a handshake that this side then fails.
    static func presentedChain(relay: HostPort) async -> [Certificate]? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .noHostnameVerification  // so the callback below sees the chain
        configuration.applicationProtocols = ["h2"]
        guard let context = try? NIOSSLContext(configuration: configuration) else { return nil }
        let captured = CapturedChain()
        let isAddress = relay.host.contains(":") || relay.host.allSatisfy { $0.isNumber || $0 == "." }
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : relay.host,
                                                              customVerificationCallback: { certificates, promise in
                            captured.set(certificates.compactMap { try? $0.toDERBytes() })
                            promise.succeed(.failed)
                        })
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: relay.host, port: relay.port).get()
            channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
            try? await channel.closeFuture.get()
        } catch {
            return nil
        }
        return captured.value.compactMap { try? Certificate(derEncoded: $0) }
    }
}

extension RelayCertificateCheck.Problem {
    var reason: TunnelFailure.Reason {
        switch self {
        case .expired: .certificateExpired
        case .notYetValid: .certificateNotYetValid
        case .unknownCA: .certificateUnknownCA
        case .nameMismatch: .certificateNameMismatch
        case .noCertificate: .certificateUntrusted
        }
    }

    func message(relay: HostPort, caFile: String) -> String {
        switch self {
        case .expired(let subject, let date):
            "the relay's certificate (\(subject)) expired at \(RFC3339.format(date)): renew it on the relay"
        case .notYetValid(let subject, let date):
            "the relay's certificate (\(subject)) is not valid before \(RFC3339.format(date)): check the clocks of the relay and of this host"
        case .unknownCA(let issuer):
            "the relay's certificate (issued by \(issuer)) does not chain to the CA in caFile \(caFile): "
                + "give the agent the CA that signed the relay's certificate, or the relay a certificate from this CA"
        case .nameMismatch(let names):
            "the relay's certificate names \(names.isEmpty ? "no host" : names.joined(separator: ", ")), not \(relay.host) "
                + "(agent.yaml relay): dial a name it has, or re-issue it for this one"
        case .noCertificate:
            "the relay presented no certificate"
        }
    }
}

/// The DER certificates a handshake callback saw.
private final class CapturedChain: Sendable {
    private let chain = Mutex<[[UInt8]]>([])
    func set(_ certificates: [[UInt8]]) { chain.withLock { $0 = certificates } }
    var value: [[UInt8]] { chain.withLock { $0 } }
}
