import Foundation
import HTTPTypes
import Hummingbird

/// Error answers in the OCI distribution spec's shape:
/// `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"…","detail":{…}}]}`.
struct OCIError: Error, Sendable {
    enum Code: String, Sendable {
        case blobUnknown = "BLOB_UNKNOWN"
        case digestInvalid = "DIGEST_INVALID"
        case manifestUnknown = "MANIFEST_UNKNOWN"
        case nameInvalid = "NAME_INVALID"
        case nameUnknown = "NAME_UNKNOWN"
        case paginationNumberInvalid = "PAGINATION_NUMBER_INVALID"
        case tagInvalid = "TAG_INVALID"
        case tooManyRequests = "TOOMANYREQUESTS"
        case unauthorized = "UNAUTHORIZED"
        case unsupported = "UNSUPPORTED"
    }

    let status: HTTPResponse.Status
    let code: Code
    let message: String
    var detail: [String: String] = [:]
    var headers: HTTPFields = [:]

    func response(head: Bool) -> Response {
        var body: [String: any Sendable] = ["code": code.rawValue, "message": message]
        if !detail.isEmpty { body["detail"] = detail }
        let data = (try? JSONSerialization.data(withJSONObject: ["errors": [body]], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        var fields = headers
        fields[.contentType] = "application/json"
        fields[.contentLength] = String(data.count)
        fields[FluxHeaders.apiVersion] = "registry/2.0"
        return Response(status: status, headers: fields, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func nameInvalid(_ name: String) -> OCIError {
        OCIError(status: .badRequest, code: .nameInvalid, message: "invalid repository name",
                 detail: ["name": String(name.prefix(300))])
    }

    static func nameUnknown(_ name: String) -> OCIError {
        OCIError(status: .notFound, code: .nameUnknown, message: "repository name not known to registry", detail: ["name": name])
    }
}

enum FluxHeaders {
    static let apiVersion = HTTPField.Name("Docker-Distribution-API-Version")!
    static let contentDigest = HTTPField.Name("Docker-Content-Digest")!
    static let link = HTTPField.Name("Link")!
}
