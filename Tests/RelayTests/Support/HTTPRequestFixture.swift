import HTTPTypes

enum HTTPRequestFixture {
    static func get(authorization: String) -> HTTPRequest {
        var request = HTTPRequest(method: .get, scheme: "http", authority: "127.0.0.1", path: "/v2/token")
        request.headerFields[.authorization] = authorization
        return request
    }
}
