import Foundation
import NIOSSL

/// The lowest TLS version a listener accepts (`tls.minVersion` in relay.yaml,
/// `flux.tls.minVersion` in agent.yaml).
public enum TLSMinimumVersion: String, Sendable, CaseIterable {
    case tls12 = "1.2"
    case tls13 = "1.3"

    /// Parses a configuration value ("1.2" or "1.3"); nil means the default, TLS 1.3.
    public init?(configValue: String?) {
        guard let configValue else { self = .tls13; return }
        guard let version = Self(rawValue: configValue.trimmingCharacters(in: .whitespaces)) else { return nil }
        self = version
    }

    /// The TLS 1.2 suites allowed when an operator lowers the minimum: ECDHE key exchange (forward
    /// secrecy) with AES-GCM or ChaCha20-Poly1305, nothing with CBC, SHA-1 MACs or RSA key exchange.
    /// (TLS 1.3 suites are all AEAD with ephemeral keys and are not configurable.)
    public static let strongTLS12Suites: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]

    /// Sets the minimum version on a server configuration, and for TLS 1.2 the strong suites only.
    public func apply(to configuration: inout TLSConfiguration) {
        switch self {
        case .tls13:
            configuration.minimumTLSVersion = .tlsv13
        case .tls12:
            configuration.minimumTLSVersion = .tlsv12
            configuration.cipherSuiteValues = Self.strongTLS12Suites
        }
    }
}
