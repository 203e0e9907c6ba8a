import AsyncHTTPClient
import Foundation
import NIOCore

/// One line of a watch stream: `{"type": "...", "object": {...}}`.
public struct KubeWatchEvent<Object: Decodable & Sendable>: Sendable {
    public enum Kind: String, Sendable { case added = "ADDED", modified = "MODIFIED", deleted = "DELETED", bookmark = "BOOKMARK", error = "ERROR" }
    public var type: Kind
    /// The object (nil for BOOKMARK and ERROR).
    public var object: Object?
    /// The resourceVersion this event brings the watch to.
    public var resourceVersion: String?
    /// For ERROR: the Status code (410 means "list again").
    public var code: Int?
    public var message: String?
}

extension KubeClient {
    /// Streams watch events from `resourceVersion` (with bookmarks) until the server ends the
    /// watch (after `timeoutSeconds`), the connection drops, or the task is cancelled.
    public func watch<Object: Decodable & Sendable>(_ resource: KubeResource, namespace: String?, resourceVersion: String,
                                                     as: Object.Type, timeoutSeconds: Int = 240,
                                                     onEvent: (KubeWatchEvent<Object>) async throws -> Void) async throws {
        var components = URLComponents()
        components.queryItems = [
            URLQueryItem(name: "allowWatchBookmarks", value: "true"),
            URLQueryItem(name: "resourceVersion", value: resourceVersion),
            URLQueryItem(name: "timeoutSeconds", value: String(timeoutSeconds)),
            URLQueryItem(name: "watch", value: "1"),
        ]
        var request = HTTPClientRequest(url: connection.server + resource.path(namespace: namespace) + "?" + (components.percentEncodedQuery ?? ""))
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "relay-agent")
        if let token = try currentToken() { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await watchHTTP.execute(request, timeout: .seconds(Int64(timeoutSeconds + 30)))
        guard response.status.code == 200 else {
            let body = try await response.body.collect(upTo: 1 << 20)
            throw Self.statusError(status: Int(response.status.code), body: Data(buffer: body), request: "WATCH \(resource.plural)")
        }
        var pending = Data()
        for try await chunk in response.body {
            pending.append(contentsOf: chunk.readableBytesView)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[pending.startIndex..<newline]
                pending.removeSubrange(pending.startIndex...newline)
                guard !line.isEmpty else { continue }
                try await onEvent(Self.decodeWatchLine(Data(line), as: Object.self))
            }
            guard pending.count < 16 << 20 else { throw KubeError.transport("watch line over 16 MiB") }
        }
    }

    static func decodeWatchLine<Object: Decodable & Sendable>(_ line: Data, as: Object.Type) throws -> KubeWatchEvent<Object> {
        let decoder = JSONDecoder()
        let envelope = try decoder.decode(WatchLine.Envelope.self, from: line)
        guard let type = KubeWatchEvent<Object>.Kind(rawValue: envelope.type) else {
            throw KubeError.transport("unknown watch event type \(envelope.type)")
        }
        let rv = (try? decoder.decode(WatchLine.WithObject<WatchLine.Meta>.self, from: line))?.object.metadata?.resourceVersion
        switch type {
        case .error:
            let status = (try? decoder.decode(WatchLine.WithObject<WatchLine.Status>.self, from: line))?.object
            return KubeWatchEvent(type: type, object: nil, resourceVersion: nil, code: status?.code, message: status?.message)
        case .bookmark:
            return KubeWatchEvent(type: type, object: nil, resourceVersion: rv)
        default:
            return KubeWatchEvent(type: type, object: try decoder.decode(WatchLine.WithObject<Object>.self, from: line).object, resourceVersion: rv)
        }
    }
}

/// The pieces of a watch line decoded before the object itself.
enum WatchLine {
    struct Envelope: Decodable { var type: String }
    struct Meta: Decodable {
        struct Fields: Decodable { var resourceVersion: String? }
        var metadata: Fields?
    }
    struct Status: Decodable { var code: Int?; var message: String? }
    struct WithObject<T: Decodable>: Decodable { var object: T }
}
