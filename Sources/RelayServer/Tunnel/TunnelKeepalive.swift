import GRPCNIOTransportHTTP2

/// Dead-peer detection without Heartbeat messages, for agents that offer it in their Hello.
///
/// Such an agent sends an HTTP/2 PING every heartbeat interval instead of a Heartbeat message
/// and gives its connection up when a PING goes unanswered for an interval. The relay's HTTP/2
/// layer answers the PING on the event loop: no task, gRPC message or protobuf on either side.
/// With 10,000 idle agents at the default 5 s, Heartbeat messages and their replies took ~25 %
/// of a core on this kind of machine, most of it in the reply's hop from the session's task to
/// the event loop and its flush through HTTP/2 and TLS (perf, Benchmarks/fleet_bench.py phase b).
///
/// The relay's side: every connection's `ConnectionClock` notes when it last received bytes,
/// and the dead-peer sweep (`LiveSessions`) ends a session whose connection has been silent
/// for two intervals, and closes the connection, just as it ends a session that sent no
/// Heartbeat for two intervals. (grpc-swift's own server keepalive is not used to close: on a
/// PING timeout it starts a graceful shutdown that waits for the open streams, which a dead
/// peer never closes.)
enum TunnelKeepalive {
    /// The gRPC server's keepalive settings: its own PINGs stay at grpc-swift's default (two
    /// hours); agents may PING at any rate down to a second, or half the interval if that is
    /// shorter. (An agent PINGs at the interval its last Welcome named, 5 s before the first;
    /// pings more often than allowed earn a "too_many_pings" GOAWAY.)
    static func config(heartbeatInterval interval: Duration) -> HTTP2ServerTransport.Config.Keepalive {
        var keepalive = HTTP2ServerTransport.Config.Keepalive.defaults
        keepalive.clientBehavior = .init(minPingIntervalWithoutCalls: min(interval / 2, .seconds(1)), allowWithoutCalls: true)
        return keepalive
    }
}
