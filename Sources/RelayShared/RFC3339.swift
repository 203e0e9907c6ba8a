import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// RFC 3339 timestamps in UTC, as Kubernetes, Flux and OCI annotations write them. Formatting
/// is written by hand: the status stream formats several dates per entry, thousands of
/// entries a second, and a Foundation formatter per date cost more than the rest of that path.
public enum RFC3339 {
    /// `2026-11-21T10:00:00Z`, or with `.123` milliseconds when `milliseconds` is set.
    public static func format(_ date: Date, milliseconds: Bool = false) -> String {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(millis >= 0 ? millis / 1000 : (millis - 999) / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        var text = "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))"
        if milliseconds { text += "." + pad(Int32(((millis % 1000) + 1000) % 1000), 3) }
        return text + "Z"
    }

    /// Parses RFC 3339 with or without fractional seconds, in UTC or with an offset.
    public static func parse(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}
