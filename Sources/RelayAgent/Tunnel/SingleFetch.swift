import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Wire
import Provenance

/// The outcome of `relay-agent fetch`: one artifact fetched by digest, outside the store.
public struct SingleFetchResult: Sendable, Codable {
    /// "ok", or the gRPC status code name (e.g. "unauthenticated", "notFound").
    public var code: String
    public var message: String
    public var bytes: UInt64
    public var digest: String?
    /// When the tunnel itself failed: why, as `relay_agent_tunnel_errors_total` labels it
    /// (e.g. "certificate_unknown_ca", "token_refused"); nil when the relay answered.
    public var reason: String?
}

extension AgentRuntime {
    /// Fetches one artifact by digest into `output` (or nowhere), checking every chunk: a
    /// diagnostic for operators ("can this agent reach and read that artifact?").
    public func fetchOnce(digest: String, output: String?) async -> SingleFetchResult {
        var received: UInt64 = 0
        let tlsErrors = TLSErrorRecorder()
        do {
            let handle: FileHandle? = try output.map { path in
                _ = FileManager.default.createFile(atPath: path, contents: nil)
                guard let handle = FileHandle(forWritingAtPath: path) else {
                    throw RPCError(code: .invalidArgument, message: "cannot write \(path)")
                }
                return handle
            }
            defer { try? handle?.close() }
            let counter = ByteCounter()
            try await withGRPCClient(transport: try makeTransport(tlsErrors: tlsErrors)) { client in
                let tunnel = Relay_V1_Tunnel.Client(wrapping: client)
                try await tunnel.fetch(.with { $0.digest = digest }, metadata: ["authorization": "Bearer \(self.config.token)"]) { response in
                    for try await chunk in response.messages {
                        guard Data(SHA256.hash(data: chunk.data)) == chunk.chunkSha256 else {
                            throw RPCError(code: .dataLoss, message: "chunk at \(chunk.offset) failed its SHA-256 check")
                        }
                        try handle?.write(contentsOf: chunk.data)
                        counter.add(chunk.data)
                    }
                }
            }
            received = counter.value
            let actual = counter.digest
            guard actual == digest else {
                return SingleFetchResult(code: "dataLoss", message: "received bytes hash to \(actual)", bytes: received, digest: actual)
            }
            return SingleFetchResult(code: "ok", message: "", bytes: received, digest: actual)
        } catch {
            let code = (error as? RPCError).map { "\($0.code)" } ?? "error"
            let failure = await TunnelFailure.classify(error, tlsError: tlsErrors.error, welcomed: false, relay: config.relay,
                                                       caFile: config.caFile)
            // An answer from the relay keeps its own words; a tunnel that failed says why.
            let answered = (error as? RPCError).map { [.notFound, .outOfRange, .dataLoss, .resourceExhausted].contains($0.code) } ?? false
            return SingleFetchResult(code: code, message: answered ? (error as? RPCError)?.message ?? failure.message : failure.message,
                                     bytes: received, digest: nil, reason: answered ? nil : failure.reason.rawValue)
        }
    }
}

/// Bytes received and their running SHA-256 (chunks arrive in order on one task).
final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var total: UInt64 = 0
    private var hasher = SHA256()

    func add(_ data: Data) {
        lock.lock()
        total += UInt64(data.count)
        hasher.update(data: data)
        lock.unlock()
    }

    var value: UInt64 { lock.lock(); defer { lock.unlock() }; return total }
    var digest: String {
        lock.lock(); defer { lock.unlock() }
        return SHA256Digest(hasher.finalize()).description
    }
}
