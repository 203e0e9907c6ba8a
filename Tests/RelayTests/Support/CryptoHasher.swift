import Crypto
import Foundation

/// SHA-256 for test assertions.
struct CryptoHasher {
    private var hasher = SHA256()
    mutating func update(_ data: Data) { hasher.update(data: data) }
    var hex: String { hasher.finalize().map { String(format: "%02x", $0) }.joined() }
}

/// HMAC-SHA256 for test requests (generic-hmac signatures).
struct CryptoKitHMAC {
    private var mac: HMAC<SHA256>
    init(key: Data) { mac = HMAC<SHA256>(key: SymmetricKey(data: key)) }
    mutating func update(_ data: Data) { mac.update(data: data) }
    var hex: String { mac.finalize().map { String(format: "%02x", $0) }.joined() }
}
