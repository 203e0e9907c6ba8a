import Foundation
import Synchronization
import Wire

/// Test-only fault injection; nothing else reads it, and it is off unless set:
/// - `RELAY_TEST_CORRUPT_CHUNK=<n>`: the n-th chunk this process serves (counting from 1)
///   has one byte flipped *after* its checksum was computed, once. The fault-tolerance tests
///   use it to prove that a damaged chunk is caught by the agent and fetched again.
/// - `RELAY_TEST_SIGNATURE_FAULT=alter`: every DesiredState artifact's signature has one byte
///   of its DER flipped (re-encoded as base64), as if altered in flight;
///   `=omit`: no signature fields at all, as a relay older than signing sends.
/// - `RELAY_TEST_LEGACY_KEEPALIVE=1`: the relay behaves as one from before transport keepalive:
///   its Welcome never agrees to it, and its gRPC server keeps grpc-swift's default PING policy
///   (one every 5 minutes; more often earns a "too_many_pings" GOAWAY).
final class FaultInjection: Sendable {
    enum SignatureFault: String, Sendable {
        case alter, omit
    }

    private let corruptChunk: Int?
    private let served = Mutex(0)
    let signatureFault: SignatureFault?
    let legacyKeepalive: Bool

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        corruptChunk = environment["RELAY_TEST_CORRUPT_CHUNK"].flatMap(Int.init)
        signatureFault = environment["RELAY_TEST_SIGNATURE_FAULT"].flatMap(SignatureFault.init(rawValue:))
        legacyKeepalive = environment["RELAY_TEST_LEGACY_KEEPALIVE"] == "1"
    }

    func apply(to data: Data) -> Data {
        guard let corruptChunk else { return data }
        let index = served.withLock { count -> Int in
            count += 1
            return count
        }
        guard index == corruptChunk, !data.isEmpty else { return data }
        var damaged = data
        damaged[damaged.startIndex] ^= 0xFF
        return damaged
    }

    /// The signature fields of a DesiredState artifact, as the configured fault leaves them.
    func apply(toSignatureOf artifact: inout Relay_V1_Artifact) {
        switch signatureFault {
        case nil:
            return
        case .omit:
            artifact.manifestDigest = ""
            artifact.signaturePayload = Data()
            artifact.signature = ""
            artifact.signingKeyID = ""
        case .alter:
            guard var der = Data(base64Encoded: artifact.signature), !der.isEmpty else { return }
            // The last byte: inside the signature's `s` integer, so the DER still parses.
            der[der.index(before: der.endIndex)] ^= 0x01
            artifact.signature = der.base64EncodedString()
        }
    }
}
