import Foundation
import SwiftASN1
import X509

/// Checks the PEM files a configuration names when it is loaded (so `check-config` catches
/// what would otherwise stop `serve` or the first handshake): certificates parse as X.509, a
/// private key parses and belongs to its certificate, CA bundles hold certificates. Errors
/// name the configuration field and the file.
///
/// PEM is read leniently, as BoringSSL reads it (any line length, text between blocks).
public struct TLSFileCheck: Sendable {
    /// The configuration file errors are reported against.
    public var configFile: String

    public init(configFile: String) { self.configFile = configFile }

    /// The certificates in a PEM file (leaf first for a chain); at least one.
    @discardableResult
    public func certificates(_ path: String, field: String) throws(ConfigError) -> [Certificate] {
        let blocks = try pemBlocks(path, field: field).filter { $0.label == "CERTIFICATE" }
        guard !blocks.isEmpty else {
            throw fail(field, "\(path) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        var certificates: [Certificate] = []
        for (index, block) in blocks.enumerated() {
            do { certificates.append(try Certificate(derEncoded: block.der)) } catch {
                throw fail(field, "\(path): certificate \(index + 1) is not a valid X.509 certificate (\(error))")
            }
        }
        return certificates
    }

    /// The private key in a PEM file (PKCS#8, SEC1 EC or PKCS#1 RSA; not encrypted).
    public func privateKey(_ path: String, field: String) throws(ConfigError) -> Certificate.PrivateKey {
        let blocks = try pemBlocks(path, field: field)
        if blocks.contains(where: { $0.label == "ENCRYPTED PRIVATE KEY" || $0.encrypted }) {
            throw fail(field, "\(path) holds an encrypted private key; give the unencrypted key (file mode 0600)")
        }
        guard let block = blocks.first(where: { $0.label.hasSuffix("PRIVATE KEY") }) else {
            throw fail(field, "\(path) holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
        }
        do { return try Certificate.PrivateKey(pemDocument: PEMDocument(type: block.label, derBytes: block.der)) } catch {
            throw fail(field, "\(path): the private key does not parse (\(error))")
        }
    }

    /// A certificate and its key: both parse and the key belongs to the (first) certificate.
    public func keyPair(certificate certificatePath: String, certificateField: String,
                        key keyPath: String, keyField: String) throws(ConfigError) {
        let leaf = try certificates(certificatePath, field: certificateField)[0]
        let key = try privateKey(keyPath, field: keyField)
        guard key.publicKey == leaf.publicKey else {
            throw fail(keyField, "\(keyPath) does not match the certificate in \(certificateField) (\(certificatePath)): "
                       + "give the key the certificate was issued for")
        }
    }

    private func fail(_ field: String, _ message: String) -> ConfigError {
        ConfigError(file: configFile, field: field, message: message)
    }

    struct Block {
        var label: String
        var der: [UInt8]
        /// Legacy OpenSSL encryption (`Proc-Type: 4,ENCRYPTED` header).
        var encrypted: Bool
    }

    /// Every `-----BEGIN X-----` … `-----END X-----` block of the file, decoded.
    func pemBlocks(_ path: String, field: String) throws(ConfigError) -> [Block] {
        guard let data = FileManager.default.contents(atPath: path) else { throw fail(field, "cannot read \(path)") }
        let text = String(decoding: data, as: UTF8.self)
        var blocks: [Block] = []
        var rest = Substring(text)
        while let begin = rest.range(of: "-----BEGIN ") {
            let afterBegin = rest[begin.upperBound...]
            guard let labelEnd = afterBegin.range(of: "-----") else { break }
            let label = String(afterBegin[..<labelEnd.lowerBound])
            let body = afterBegin[labelEnd.upperBound...]
            guard let end = body.range(of: "-----END \(label)-----") else {
                throw fail(field, "\(path): the PEM block '\(label)' has no END line")
            }
            var encrypted = false
            var base64 = ""
            for line in body[..<end.lowerBound].split(whereSeparator: \.isNewline) {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.contains(":") {  // RFC 1421 header line
                    if trimmed.hasPrefix("Proc-Type:"), trimmed.contains("ENCRYPTED") { encrypted = true }
                    continue
                }
                base64 += trimmed
            }
            guard let der = Data(base64Encoded: base64), !der.isEmpty else {
                throw fail(field, "\(path): the PEM block '\(label)' is not valid base64")
            }
            blocks.append(Block(label: label, der: Array(der), encrypted: encrypted))
            rest = body[end.upperBound...]
        }
        guard !blocks.isEmpty else {
            throw fail(field, "\(path) is not a PEM file (no -----BEGIN line); convert DER with "
                       + "`openssl x509 -inform der -in FILE -out FILE.pem`")
        }
        return blocks
    }
}
