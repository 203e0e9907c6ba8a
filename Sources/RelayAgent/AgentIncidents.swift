import Foundation
import Logging
import Wire

/// Agent-side incidents the relay's operators should see: logged with a stable code and
/// journaled as an event (kind `Artifact`, controller `relay-agent`) that travels up with
/// Flux's status to the relay's timeline.
struct AgentIncidents: Sendable {
    let journal: @Sendable () -> StatusJournal?
    let logger: Logger

    func report(code: String, reason: String, source: String, revision: String, digest: String, message: String) {
        logger.error("\(message)", metadata: ["code": "\(code)", "source": "\(source)", "digest": "\(digest)"])
        let event = Relay_V1_FluxEvent.with {
            $0.kind = "Artifact"
            $0.name = source.isEmpty ? digest : source
            $0.severity = "error"
            $0.reason = reason
            $0.message = message
            $0.revision = revision
            $0.controller = "relay-agent"
            $0.timestampUnixMs = Int64(Date().timeIntervalSince1970 * 1000)
            $0.metadata = ["digest": digest, "code": code]
        }
        do {
            guard let journal = journal() else { return }
            try journal.append([.event(event)])
            AgentMetrics.journal(journal)
        } catch {
            logger.warning("cannot journal the incident for the relay", metadata: ["code": "\(code)", "error": "\(error)"])
        }
    }
}
