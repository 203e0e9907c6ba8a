import Foundation

/// The wall clock freeze windows and soak times are judged by.
///
/// Tests move it: with `RELAY_TEST_CLOCK_OFFSET_FILE` set, the file's number (seconds, may be
/// negative or fractional) is added to the system time, read again on every call, so a test
/// can step a running relay into and out of a freeze window without waiting for it. Nothing
/// else in the relay uses this clock.
public struct RelayClock: Sendable {
    let offsetFile: String?

    public static let system = RelayClock(offsetFile: ProcessInfo.processInfo.environment["RELAY_TEST_CLOCK_OFFSET_FILE"])

    public func now() -> Date {
        guard let offsetFile, let data = FileManager.default.contents(atPath: offsetFile),
              let offset = Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            return Date()
        }
        return Date().addingTimeInterval(offset)
    }
}
