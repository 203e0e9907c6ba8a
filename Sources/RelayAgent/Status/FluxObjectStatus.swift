import Foundation
import RelayShared
import Wire

/// A Flux object as the status watcher reads it: the fields kstatus and the status feed need
/// (spec §7), for Kustomization, HelmRelease, OCIRepository, ExternalArtifact and GitRepository.
public struct FluxObject: Decodable, Sendable {
    public struct Metadata: Decodable, Sendable {
        public var name: String
        public var namespace: String?
        public var generation: Int64?
        public var resourceVersion: String?
        public var deletionTimestamp: String?
    }
    public struct Reference: Decodable, Sendable {
        public var kind: String?
        public var name: String?
        public var namespace: String?
    }
    public struct Spec: Decodable, Sendable {
        public var suspend: Bool?
        public var url: String?
        public var sourceRef: Reference?
        public var chartRef: Reference?
    }
    public struct Condition: Decodable, Sendable {
        public var type: String
        public var status: String
        public var reason: String?
        public var message: String?
        public var lastTransitionTime: String?
        public var observedGeneration: Int64?
    }
    public struct Snapshot: Decodable, Sendable {
        public var chartVersion: String?
        public var status: String?
        public var digest: String?
    }
    public struct ArtifactRef: Decodable, Sendable { public var revision: String? }
    public struct Status: Decodable, Sendable {
        public var observedGeneration: Int64?
        public var conditions: [Condition]?
        public var lastAppliedRevision: String?
        public var lastAttemptedRevision: String?
        public var artifact: ArtifactRef?
        public var history: [Snapshot]?
    }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: Metadata
    public var spec: Spec?
    public var status: Status?

    func condition(_ type: String) -> Condition? { status?.conditions?.first { $0.type == type } }
}

/// Reduces a Flux object to the feed's state, by the kstatus rules Flux itself uses (spec
/// §7.3), in order: suspended, terminating, progressing (generation not yet observed, or
/// Reconciling=True), failed (Stalled=True), ready (Ready=True), failing (Ready=False),
/// otherwise unknown.
enum FluxStatusReducer {
    static func reduce(_ object: FluxObject, kind: String, apiVersion: String, source: String) -> Relay_V1_ObjectState {
        let ready = object.condition("Ready")
        var state = "unknown"
        var deciding = ready
        if object.spec?.suspend == true {
            state = "suspended"
        } else if object.metadata.deletionTimestamp != nil {
            state = "terminating"
        } else if let generation = object.metadata.generation, generation > 0,
                  (object.status?.observedGeneration ?? 0) < generation, kind != "ExternalArtifact" {
            state = "progressing"
        } else if let reconciling = object.condition("Reconciling"), reconciling.status == "True" {
            state = "progressing"
            deciding = reconciling
        } else if let stalled = object.condition("Stalled"), stalled.status == "True" {
            state = "failed"
            deciding = stalled
        } else if ready?.status == "True" {
            state = "ready"
        } else if ready?.status == "False" {
            state = "failing"
        } else if ready?.status == "Unknown" {
            state = "progressing"
        }
        let applied: String
        switch kind {
        case "Kustomization": applied = object.status?.lastAppliedRevision ?? ""
        case "HelmRelease":
            let current = object.status?.history?.first
            applied = current?.status == "deployed" ? current?.chartVersion ?? "" : ""
        default: applied = object.status?.artifact?.revision ?? ""
        }
        return .with {
            $0.apiVersion = apiVersion
            $0.kind = kind
            $0.namespace = object.metadata.namespace ?? ""
            $0.name = object.metadata.name
            $0.state = state
            $0.reason = deciding?.reason ?? ""
            $0.message = String((deciding?.message ?? "").prefix(2048))
            $0.revisionApplied = applied
            $0.revisionAttempted = object.status?.lastAttemptedRevision ?? ""
            $0.lastTransitionUnixMs = ready?.lastTransitionTime.flatMap(RFC3339.parseMilliseconds) ?? 0
            $0.source = source
            $0.generation = object.metadata.generation ?? 0
            $0.observedGeneration = object.status?.observedGeneration ?? 0
        }
    }
}
