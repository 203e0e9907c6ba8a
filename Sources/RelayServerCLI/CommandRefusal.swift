import ArgumentParser
import Foundation

/// How the bundle commands answer a failure: `{"ok": false, "code", "message"}` on stdout
/// (for scripts), the message and code on stderr, and the exit status.
enum CommandRefusal {
    static func fail(code: String, message: String, exit: Int32) throws -> Never {
        struct Refused: Encodable { var ok = false; var code: String; var message: String }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(Refused(code: code, message: message)), as: UTF8.self))
        FileHandle.standardError.write(Data("error: \(message) [\(code)]\n".utf8))
        throw ExitCode(exit)
    }
}
