import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import RelayShared
import Wire
import Provenance

/// Takes notification-controller events at `POST /flux/events`: the payload of Flux's
/// `generic` and `generic-hmac` providers (an `event.v1beta1.Event`). With a key configured
/// the `X-Signature: sha256=<hex HMAC-SHA256 of the body>` header must match (generic-hmac).
/// An event is answered 202 only once it is durably in the status journal, so a failure
/// here makes notification-controller log an error rather than lose it silently.
public struct FluxEventReceiver: Sendable {
    let journal: StatusJournal
    let hmacKey: String?
    /// Largest body accepted (413 beyond). What is journaled is smaller still: fields are cut
    /// to `StatusEntryLimits` (a 16 KiB message, 16 KiB of metadata) and say so.
    static let maxBytes = 256 << 10

    public init(journal: StatusJournal, hmacKey: String?) {
        self.journal = journal
        self.hmacKey = hmacKey
    }

    /// The wire shape of a Flux event (fields relay-agent reads).
    struct Payload: Decodable {
        struct InvolvedObject: Decodable {
            var kind: String?
            var namespace: String?
            var name: String?
        }
        var involvedObject: InvolvedObject
        var severity: String?
        var timestamp: String?
        var message: String?
        var reason: String?
        var metadata: [String: String]?
        var reportingController: String?
    }

    func respond(_ request: Request) async -> Response {
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: Self.maxBytes) } catch {
            return Self.plain(.contentTooLarge, "event body larger than \(Self.maxBytes) bytes, relay-agent's limit for one "
                              + "Flux event: not journaled (long messages and metadata are cut to fit anyway; "
                              + "look for what makes this event so large)\n")
        }
        let data = Data(buffer: body)
        if let hmacKey {
            let mac = HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: Data(hmacKey.utf8)))
            let expected = "sha256=" + SHA256Digest.lowercaseHex(mac)
            guard let given = request.headers[HTTPField.Name("X-Signature")!],
                  Data(SHA256.hash(data: Data(given.utf8))) == Data(SHA256.hash(data: Data(expected.utf8))) else {
                return Self.plain(.unauthorized, "missing or wrong X-Signature (generic-hmac provider: check the Provider's secret)\n")
            }
        }
        let event: Relay_V1_FluxEvent
        do { event = try Self.event(from: data) } catch {
            return Self.plain(.badRequest, "not a Flux event: \(error.reason)\n")
        }
        do {
            try journal.append([.event(event)])
            AgentMetrics.fluxEvents.increment()
            AgentMetrics.journal(journal)
        } catch {
            return Self.plain(.serviceUnavailable, "cannot journal the event: \(error)\n")
        }
        return Self.plain(.accepted, "journaled\n")
    }

    /// Why a body is not a Flux event (answered 400).
    struct NotAnEvent: Error { var reason: String }

    /// The status entry for an event body.
    static func event(from data: Data) throws(NotAnEvent) -> Relay_V1_FluxEvent {
        let payload: Payload
        do { payload = try JSONDecoder().decode(Payload.self, from: data) } catch { throw NotAnEvent(reason: "\(error)") }
        guard let kind = payload.involvedObject.kind, let name = payload.involvedObject.name, !kind.isEmpty, !name.isEmpty else {
            throw NotAnEvent(reason: "involvedObject.kind and .name are required")
        }
        let metadata = payload.metadata ?? [:]
        return Relay_V1_FluxEvent.with {
            $0.kind = kind
            $0.namespace = payload.involvedObject.namespace ?? ""
            $0.name = name
            $0.severity = payload.severity ?? "info"
            $0.reason = payload.reason ?? ""
            $0.message = payload.message ?? ""
            $0.revision = metadata["revision"] ?? ""
            $0.controller = payload.reportingController ?? ""
            $0.timestampUnixMs = payload.timestamp.flatMap(RFC3339.parseMilliseconds) ?? 0
            $0.metadata = metadata
        }
    }

    static func plain(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
