import Foundation

/// The regular files of a Flux artifact (`.tar.gz`), path → contents, read with the same
/// checks Flux's reader applies (a tarball Flux would refuse is refused here too).
public enum ArtifactFiles {
    /// Files larger than this are listed but not read (their contents compare as one line
    /// naming the limit).
    public static let maxFileBytes = 1 << 20

    /// One regular file of the artifact (nil when it holds none at `name`; a file over
    /// `maxFileBytes` is refused).
    public static func read(path: String, file name: String) throws(ArtifactMirrorError) -> Data? {
        let verifier = TarballVerifier(maxUnpackedSize: TarballVerifier.fluxDefaultMaxUntarSize)
        let names = [name, "./" + name]
        let (report, tar) = try verifier.inspect(file: path, capture: Set(names))
        guard report.ok else { throw .invalidArgument("\(path) is not a valid Flux artifact: \(report.errors.joined(separator: "; "))") }
        if let bytes = names.lazy.compactMap({ tar.captured[$0] }).first { return Data(bytes) }
        if tar.names.contains(where: { names.contains($0.name) && ($0.type == UInt8(ascii: "0") || $0.type == 0) }) {
            throw .invalidArgument("\(name) is larger than \(maxFileBytes) bytes")
        }
        return nil
    }

    public static func read(path: String) throws(ArtifactMirrorError) -> [String: Data] {
        let verifier = TarballVerifier(maxUnpackedSize: TarballVerifier.fluxDefaultMaxUntarSize)
        let listing = try verifier.inspect(file: path, capture: [])
        guard listing.report.ok else {
            throw .invalidArgument("\(path) is not a valid Flux artifact: \(listing.report.errors.joined(separator: "; "))")
        }
        let regular = listing.tar.names.filter { $0.type == UInt8(ascii: "0") || $0.type == 0 }.map(\.name)
        let read = try verifier.inspect(file: path, capture: Set(regular)).tar
        var files: [String: Data] = [:]
        for name in regular {
            let path = name.hasPrefix("./") ? String(name.dropFirst(2)) : name
            files[path] = read.captured[name].map { Data($0) } ?? Data("(a file over \(maxFileBytes) bytes: not compared)\n".utf8)
        }
        return files
    }
}
