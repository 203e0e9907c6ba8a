import Foundation
import Yams

/// Where the Kubernetes API is and how to authenticate to it: in-cluster service-account
/// configuration, or a kubeconfig file for development.
public struct KubeConnection: Sendable {
    public enum Credentials: Sendable {
        /// A bearer token read from this file before every request batch (projected
        /// service-account tokens rotate).
        case tokenFile(String)
        case token(String)
        /// PEM client certificate and key.
        case clientCertificate(certificate: [UInt8], key: [UInt8])
        case none
    }

    /// `https://host:port` (no trailing slash).
    public var server: String
    /// PEM bundle of the cluster CA; nil uses the system's trust store.
    public var certificateAuthority: [UInt8]?
    public var insecureSkipTLSVerify: Bool
    public var credentials: Credentials
    /// The namespace of the service account or kubeconfig context.
    public var namespace: String?
    /// Where this came from, for error messages.
    public var origin: String

    public init(server: String, certificateAuthority: [UInt8]?, insecureSkipTLSVerify: Bool = false,
                credentials: Credentials, namespace: String?, origin: String) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.certificateAuthority = certificateAuthority
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.credentials = credentials
        self.namespace = namespace
        self.origin = origin
    }

    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted
    /// service account (`token`, `ca.crt`, `namespace`).
    public static func inCluster(serviceAccountDirectory: String = serviceAccountDirectory,
                                 environment: [String: String] = ProcessInfo.processInfo.environment) throws(KubeError) -> KubeConnection {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
              let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else {
            throw .configuration("not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset); set flux.kubernetes.kubeconfig to use a kubeconfig file")
        }
        let token = serviceAccountDirectory + "/token"
        guard FileManager.default.isReadableFile(atPath: token) else {
            throw .configuration("no service account token at \(token): is automountServiceAccountToken off for this pod?")
        }
        let ca = FileManager.default.contents(atPath: serviceAccountDirectory + "/ca.crt").map { [UInt8]($0) }
        let namespace = FileManager.default.contents(atPath: serviceAccountDirectory + "/namespace")
            .map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        let authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return KubeConnection(server: "https://\(authority)", certificateAuthority: ca, credentials: .tokenFile(token),
                              namespace: namespace, origin: "in-cluster service account")
    }

    /// A kubeconfig file: the named context, or its `current-context`.
    public static func kubeconfig(path: String, context wanted: String? = nil) throws(KubeError) -> KubeConnection {
        guard let data = FileManager.default.contents(atPath: path) else { throw .configuration("cannot read kubeconfig \(path)") }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func fail(_ message: String) -> KubeError { .configuration("kubeconfig \(path): \(message)") }
        let file: KubeconfigFile
        do { file = try YAMLDecoder().decode(KubeconfigFile.self, from: data) } catch { throw fail("not a kubeconfig (\(error))") }
        guard let contextName = wanted ?? file.currentContext else { throw fail("no current-context; name one with flux.kubernetes.context") }
        guard let context = file.contexts?.first(where: { $0.name == contextName })?.context else { throw fail("no context '\(contextName)'") }
        guard let cluster = file.clusters?.first(where: { $0.name == context.cluster })?.cluster else { throw fail("no cluster '\(context.cluster)'") }
        let user = context.user.flatMap { name in file.users?.first(where: { $0.name == name })?.user }
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : base.appendingPathComponent(file).path }
        func pem(data: String?, file: String?, _ what: String) throws(KubeError) -> [UInt8]? {
            if let data {
                guard let decoded = Data(base64Encoded: data) else { throw fail("\(what)-data is not base64") }
                return [UInt8](decoded)
            }
            if let file {
                guard let contents = FileManager.default.contents(atPath: resolve(file)) else { throw fail("cannot read \(what) \(resolve(file))") }
                return [UInt8](contents)
            }
            return nil
        }
        let credentials: Credentials
        if let user, user.exec != nil || user.authProvider != nil {
            throw fail("user '\(context.user ?? "")' uses an exec or auth-provider plugin, which relay-agent does not run; use a token or client certificate")
        } else if let token = user?.token {
            credentials = .token(token)
        } else if let tokenFile = user?.tokenFile {
            credentials = .tokenFile(resolve(tokenFile))
        } else if let certificate = try pem(data: user?.clientCertificateData, file: user?.clientCertificate, "client-certificate") {
            guard let key = try pem(data: user?.clientKeyData, file: user?.clientKey, "client-key") else { throw fail("client-certificate without client-key") }
            credentials = .clientCertificate(certificate: certificate, key: key)
        } else {
            credentials = .none
        }
        return KubeConnection(server: cluster.server,
                              certificateAuthority: try pem(data: cluster.certificateAuthorityData, file: cluster.certificateAuthority, "certificate-authority"),
                              insecureSkipTLSVerify: cluster.insecureSkipTLSVerify ?? false, credentials: credentials,
                              namespace: context.namespace, origin: "kubeconfig \(path), context \(contextName)")
    }
}

/// The parts of a kubeconfig relay-agent reads.
struct KubeconfigFile: Decodable {
    struct NamedCluster: Decodable { var name: String; var cluster: Cluster }
    struct Cluster: Decodable {
        var server: String
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?
        enum CodingKeys: String, CodingKey {
            case server, certificateAuthority = "certificate-authority", certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
        }
    }
    struct NamedUser: Decodable { var name: String; var user: User }
    struct User: Decodable {
        var token: String?
        var tokenFile: String?
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var exec: Present?
        var authProvider: Present?
        enum CodingKeys: String, CodingKey {
            case token, tokenFile, exec, authProvider = "auth-provider"
            case clientCertificate = "client-certificate", clientCertificateData = "client-certificate-data"
            case clientKey = "client-key", clientKeyData = "client-key-data"
        }
    }
    struct NamedContext: Decodable { var name: String; var context: Context }
    struct Context: Decodable { var cluster: String; var user: String?; var namespace: String? }

    /// Any value: only whether the key is there matters.
    struct Present: Decodable { init(from decoder: any Decoder) throws {} }

    var clusters: [NamedCluster]?
    var users: [NamedUser]?
    var contexts: [NamedContext]?
    var currentContext: String?
    enum CodingKeys: String, CodingKey { case clusters, users, contexts, currentContext = "current-context" }
}
