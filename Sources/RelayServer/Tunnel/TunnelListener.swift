import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import RelayShared
import Synchronization
import X509

/// The tunnel's TLS listener: grpc-swift's HTTP/2 pipeline behind a TLS configuration of our
/// own (grpc-swift's Posix transport fixes the minimum at TLS 1.2 and hides the cipher list).
/// TLS 1.3 only unless `tls.minVersion: "1.2"` (then ECDHE + AEAD suites only), and with
/// `tls.clientCAFile` a client certificate from that CA. The names in each connection's client
/// certificate are kept in `peers` for as long as the connection lives, so a call can be tied
/// to the agent its token names (`tls.bindClientCertificate`).
struct TunnelListener: HTTP2ServerTransport.ListenerFactory {
    let host: String
    let port: Int
    let context: NIOSSLContext
    let peers: ClientCertificateNames
    /// Caps handshakes in progress (`limits.maxPendingHandshakes`).
    let handshakes: HandshakeGate
    /// Artifact bytes on their way out, relay-wide (`limits.maxFetchBytesInFlight`).
    let outbound: OutboundBytes
    /// When each connection last received bytes (`TunnelKeepalive`).
    let clocks: ConnectionClocks
    let logger: Logger

    var eventLoopGroup: any EventLoopGroup { MultiThreadedEventLoopGroup.singleton }

    /// The TLS configuration for the tunnel, from relay.yaml's `tls:` section.
    static func makeContext(certificateFile: String, keyFile: String, clientCAFile: String?,
                            minimumVersion: TLSMinimumVersion) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateFile) } catch {
            throw TunnelListenerError("tls.certFile: cannot load a PEM certificate from \(certificateFile): \(error)")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyFile, format: .pem) } catch {
            throw TunnelListenerError("tls.keyFile: cannot load a PEM private key from \(keyFile): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(key))
        configuration.applicationProtocols = ["grpc-exp", "h2"]
        minimumVersion.apply(to: &configuration)
        if let clientCAFile {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .file(clientCAFile)
        }
        do { return try NIOSSLContext(configuration: configuration) } catch {
            throw TunnelListenerError("tls: the certificate, key and CA do not make a usable TLS configuration: \(error)")
        }
    }

    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        let context = context
        let peers = peers
        let handshakes = handshakes
        let outbound = outbound
        let logger = logger
        let clocks = clocks
        return try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A fleet reconnecting at once: the kernel queues connections the relay has not
            // accepted yet (up to net.core.somaxconn) instead of dropping their SYNs.
            .serverChannelOption(.backlog, value: 4096)
            // Accept many connections per wake-up (NIO's default is 4): with the event loops busy
            // with handshakes, 4 a tick let the kernel's accept queue overflow in a reconnect
            // storm, and every dropped SYN costs its agent 1, 3, 7… seconds of TCP retransmits
            // (measured: 7,470 SYNs dropped while 10,000 agents connected). `HandshakeGate`
            // pauses accepting while `maxPendingHandshakes` handshakes are in progress.
            .serverChannelOption(.maxMessagesPerRead, value: 256)
            .serverChannelInitializer { listener in
                handshakes.attach(listener: listener)
                return listenerConfigurator.configure(channel: listener)
            }
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: context))
                    // After TLS: it sees the handshake complete.
                    try sync.addHandler(handshakes.handler())
                    try sync.addHandler(ClientCertificateRecorder(peers: peers))
                    // Bounded per-connection buffers between TLS and HTTP/2 (see TLSBufferBounds).
                    try sync.addHandler(TLSBufferBounds(outbound: outbound))
                    try sync.addHandler(clocks.handler())
                }.flatMap {
                    connectionConfigurator.configure(channel: channel, tls: .configured(requireALPN: false))
                }.flatMapThrowing { configured in
                    ConnectionFrameFilter.install(in: channel.pipeline.syncOperations, logger: logger)
                    return configured
                }
            }
    }
}

struct TunnelListenerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One tunnel connection as both its channel and gRPC's `ServerContext` can name it: the peer's
/// address and the relay's, in gRPC's `remotePeer`/`localPeer` form (`ipv4:1.2.3.4:5678`,
/// `ipv6:[::1]:5678`). The peer's address alone is not unique: with the relay on several
/// addresses, one client address and port can be connected to two of them at once (the fleet
/// benchmark's agents did exactly that), and per-connection state keyed by it got mixed up.
enum ConnectionKey {
    static func of(_ channel: any Channel) -> String? {
        guard let remote = address(channel.remoteAddress), let local = address(channel.localAddress) else { return nil }
        return "\(remote) \(local)"
    }

    static func of(_ context: ServerContext) -> String { "\(context.remotePeer) \(context.localPeer)" }

    static func address(_ address: NIOCore.SocketAddress?) -> String? {
        switch address {
        case .v4(let ipv4)?: address?.port.map { "ipv4:\(ipv4.host):\($0)" }
        case .v6(let ipv6)?: address?.port.map { "ipv6:[\(ipv6.host)]:\($0)" }
        default: nil
        }
    }
}

/// The names (subject CN and DNS SANs) of the client certificate of each open tunnel
/// connection, by `ConnectionKey`.
final class ClientCertificateNames: Sendable {
    private let names = Mutex<[String: [String]]>([:])

    func names(forPeer peer: String) -> [String] { names.withLock { $0[peer] ?? [] } }

    func record(_ certificateNames: [String], peer: String) { names.withLock { $0[peer] = certificateNames } }

    func forget(peer: String) { _ = names.withLock { $0.removeValue(forKey: peer) } }

    /// The subject's common name(s) and DNS subject alternative names of a certificate.
    static func names(of certificate: NIOSSLCertificate) -> [String] {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return [] }
        var result = parsed.subject.flatMap { $0 }.filter { $0.type == .RDNAttributeType.commonName }.compactMap { String($0.value) }
        if let sans = try? parsed.extensions.subjectAlternativeNames {
            for case .dnsName(let name) in sans { result.append(name) }
        }
        return result
    }
}

/// Records the client certificate's names once the handshake is done; forgets them when the
/// connection closes.
private final class ClientCertificateRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let peers: ClientCertificateNames
    private var key: String?

    init(peers: ClientCertificateNames) { self.peers = peers }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event,
           let key = ConnectionKey.of(context.channel),
           let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
           let certificate = handler.peerCertificate {
            self.key = key
            peers.record(ClientCertificateNames.names(of: certificate), peer: key)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let key { peers.forget(peer: key) }
        context.fireChannelInactive()
    }
}
