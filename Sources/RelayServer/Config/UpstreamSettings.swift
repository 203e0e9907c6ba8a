import ArtifactMirror
import Foundation
import RelayShared

extension ServerConfig {
    /// Credentials for a Helm repository or an OCI registry.
    public struct UpstreamAuth: Sendable, Decodable {
        public var username: String?
        public var passwordFile: String?
    }

    /// `sources[].helm`: a chart from a Helm HTTP repository (`https://…`, its `index.yaml`)
    /// or an OCI registry (`oci://…`, charts pushed with `helm push`).
    public struct HelmSettings: Sendable, Decodable {
        public var url: String
        public var chart: String
        /// An exact version or a SemVer range (Masterminds rules, as for Git tags); default `*`.
        public var version: String?
        public var auth: UpstreamAuth?
        /// PEM CA bundle trusted for the upstream's HTTPS (default: the system's).
        public var caFile: String?
        /// Plain HTTP to an `oci://` registry (as OCIRepository's `insecure`).
        public var insecure: Bool?
    }

    /// `sources[].oci`: any OCI artifact (e.g. `flux push artifact` output).
    public struct OCISettings: Sendable, Decodable {
        public struct Ref: Sendable, Decodable {
            public var tag: String?
            public var semver: String?
            public var digest: String?
        }
        public var url: String
        /// As OCIRepository `spec.ref`; default `tag: latest`.
        public var ref: Ref?
        public var auth: UpstreamAuth?
        public var caFile: String?
        public var insecure: Bool?
    }
}

/// Where a Helm chart or OCI artifact source comes from, validated.
public enum Upstream: Sendable {
    case helmRepository(HelmRepositoryUpstream)
    case helmRegistry(RegistryUpstream, chart: String, version: VersionChoice)
    case oci(RegistryUpstream, reference: OCIReference)

    /// The upstream as shown to people and put in the manifest's `source` annotation (no credentials).
    public var origin: String {
        switch self {
        case .helmRepository(let repository): "\(repository.url)#\(repository.chart)"
        case .helmRegistry(let registry, let chart, _): "oci://\(registry.host)/\(registry.repository)/\(chart)"
        case .oci(let registry, _): "oci://\(registry.host)/\(registry.repository)"
        }
    }

    public var access: UpstreamAccess {
        switch self {
        case .helmRepository(let repository): repository.access
        case .helmRegistry(let registry, _, _), .oci(let registry, _): registry.access
        }
    }
}

/// How to reach an upstream: credentials and TLS.
public struct UpstreamAccess: Sendable {
    public var username: String?
    public var password: String?
    public var caFile: String?
    /// Plain HTTP (registries only).
    public var insecure: Bool
}

/// A Helm HTTP repository and the chart wanted from it.
public struct HelmRepositoryUpstream: Sendable {
    /// The repository URL, without a trailing slash.
    public var url: String
    public var chart: String
    public var version: VersionChoice
    public var access: UpstreamAccess
}

/// A repository in an OCI registry.
public struct RegistryUpstream: Sendable {
    /// `host[:port]`.
    public var host: String
    /// The repository path (for a Helm source, the chart is appended).
    public var repository: String
    public var access: UpstreamAccess
    public var baseURL: String { "\(access.insecure ? "http" : "https")://\(host)" }
}

/// Which chart version: one exactly, or the highest in a range.
public enum VersionChoice: Sendable, CustomStringConvertible {
    case exact(String)
    case range(SemVerConstraint)

    public var description: String {
        switch self {
        case .exact(let version): version
        case .range(let constraint): constraint.text
        }
    }

    /// `text` as HelmChart `spec.version` reads it: a plain version is exact, anything else a range.
    static func parse(_ text: String?) throws -> VersionChoice {
        let text = (text ?? "*").trimmingCharacters(in: .whitespaces)
        if SemanticVersion(lenient: text) != nil { return .exact(text) }
        return .range(try SemVerConstraint(text.isEmpty ? "*" : text))
    }
}

/// OCIRepository `spec.ref`, resolved.
public enum OCIReference: Sendable, CustomStringConvertible {
    case tag(String)
    case semver(SemVerConstraint)
    case digest(String)

    public var description: String {
        switch self {
        case .tag(let tag): "tag \(tag)"
        case .semver(let constraint): "semver \(constraint.text)"
        case .digest(let digest): "digest \(digest)"
        }
    }
}

extension ServerConfig.Source {
    /// The validated `helm:` or `oci:` part, nil for a Git source (`url`).
    func upstream(field: String, fail: (String, String) -> ConfigError,
                  secret: (String, String) throws(ConfigError) -> String,
                  readable: (String, String) throws(ConfigError) -> String) throws(ConfigError) -> Upstream? {
        let kinds = [url != nil, helm != nil, oci != nil].filter { $0 }.count
        guard kinds == 1 else {
            throw fail(field, kinds == 0 ? "set url (a Git repository), helm (a chart) or oci (an OCI artifact)"
                : "set only one of url, helm and oci")
        }
        func access(_ auth: ServerConfig.UpstreamAuth?, caFile: String?, insecure: Bool?, _ field: String) throws(ConfigError) -> UpstreamAccess {
            var access = UpstreamAccess(username: auth?.username, caFile: nil, insecure: insecure ?? false)
            if let auth {
                guard auth.username?.isEmpty == false, let passwordFile = auth.passwordFile else {
                    throw fail("\(field).auth", "set both username and passwordFile")
                }
                access.password = try secret(passwordFile, "\(field).auth.passwordFile")
            }
            access.caFile = try caFile.map { (path) throws(ConfigError) in try readable(path, "\(field).caFile") }
            return access
        }
        func registry(_ text: String, _ field: String, _ access: UpstreamAccess) throws(ConfigError) -> RegistryUpstream {
            let rest = text.dropFirst("oci://".count)
            guard let slash = rest.firstIndex(of: "/"), rest.distance(from: rest.startIndex, to: slash) > 0 else {
                throw fail("\(field).url", "expected oci://<registry host>/<repository>, e.g. oci://ghcr.io/stefanprodan/charts")
            }
            let host = String(rest[..<slash])
            let repository = String(rest[rest.index(after: slash)...]).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            guard !repository.isEmpty, repository.split(separator: "/").allSatisfy({ OCIPayload.isTag($0) && $0 == $0.lowercased() }),
                  host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-:[]".contains($0)) }) else {
                throw fail("\(field).url", "'\(text)' is not a valid registry repository (lowercase path components)")
            }
            return RegistryUpstream(host: host, repository: repository, access: access)
        }
        if let helm {
            let field = "\(field).helm"
            let access = try access(helm.auth, caFile: helm.caFile, insecure: helm.insecure, field)
            guard !helm.chart.isEmpty, !helm.chart.contains("/"), OCIPayload.isTag(helm.chart) else {
                throw fail("\(field).chart", "'\(helm.chart)' is not a chart name")
            }
            let version: VersionChoice
            do { version = try VersionChoice.parse(helm.version) } catch { throw fail("\(field).version", "\(error)") }
            if helm.url.hasPrefix("oci://") {
                return .helmRegistry(try registry(helm.url, field, access), chart: helm.chart, version: version)
            }
            guard let url = URLComponents(string: helm.url), url.scheme == "https" || url.scheme == "http", url.host?.isEmpty == false,
                  url.user == nil, url.password == nil else {
                throw fail("\(field).url", "expected https://<repository> (its index.yaml beside it) or oci://<registry>/<path>, without credentials (use auth)")
            }
            if helm.insecure != nil { throw fail("\(field).insecure", "applies to oci:// registries only; write http:// for a plain-HTTP repository") }
            let base = helm.url.hasSuffix("/") ? String(helm.url.dropLast()) : helm.url
            return .helmRepository(HelmRepositoryUpstream(url: base, chart: helm.chart, version: version, access: access))
        }
        if let oci {
            let field = "\(field).oci"
            guard oci.url.hasPrefix("oci://") else { throw fail("\(field).url", "expected oci://<registry host>/<repository>") }
            let access = try access(oci.auth, caFile: oci.caFile, insecure: oci.insecure, field)
            let reference: OCIReference
            let ref = oci.ref
            switch (ref?.tag, ref?.semver, ref?.digest) {
            case (nil, nil, nil): reference = .tag("latest")
            case (let tag?, nil, nil):
                guard OCIPayload.isTag(tag) else { throw fail("\(field).ref.tag", "'\(tag)' is not a valid OCI tag") }
                reference = .tag(tag)
            case (nil, let semver?, nil):
                do { reference = .semver(try SemVerConstraint(semver)) } catch { throw fail("\(field).ref.semver", "\(error)") }
            case (nil, nil, let digest?):
                guard OCIPayload.isSHA256Digest(digest) else { throw fail("\(field).ref.digest", "expected sha256:<64 lowercase hex>") }
                reference = .digest(digest)
            default:
                throw fail("\(field).ref", "set one of tag, semver and digest")
            }
            return .oci(try registry(oci.url, field, access), reference: reference)
        }
        return nil
    }
}
