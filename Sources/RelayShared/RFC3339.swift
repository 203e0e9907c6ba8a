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
        let millis = wholeMilliseconds(date)
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

    /// Milliseconds since 1970, rounded down; a Date within a few units in the last place (or
    /// 10 µs) below a whole millisecond counts as that millisecond: a Date made from N ms
    /// (`Date(timeIntervalSince1970: N / 1000)`) often sits a hair below N, and is N.
    static func wholeMilliseconds(_ date: Date) -> Int64 {
        let exact = date.timeIntervalSince1970 * 1000
        let nearest = exact.rounded()
        return Int64(nearest - exact >= 0 && nearest - exact <= max(0.01, 8 * exact.ulp) ? nearest : exact.rounded(.down))
    }

    /// Parses RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`T` and `Z` in either case),
    /// as Go's `time.RFC3339` reads it: fields in range, the day valid for its month, at most
    /// nanosecond precision kept. Written by hand because the text comes from outside (Flux
    /// events, Kubernetes objects) and ICU's parser behind `ISO8601DateFormatter` crashes the
    /// process (SIGFPE) on a long run of digits.
    public static func parse(_ text: String) -> Date? {
        guard let (seconds, nanoseconds) = instant(text) else { return nil }
        return Date(timeIntervalSince1970: Double(seconds) + Double(nanoseconds) / 1e9)
    }

    /// ``parse(_:)`` as Unix milliseconds, computed exactly (no floating point on the way).
    public static func parseMilliseconds(_ text: String) -> Int64? {
        guard let (seconds, nanoseconds) = instant(text) else { return nil }
        return Int64(seconds) * 1000 + Int64(nanoseconds / 1_000_000)
    }

    /// Seconds since 1970 and nanoseconds within that second.
    private static func instant(_ text: String) -> (seconds: Int, nanoseconds: Int)? {
        var scanner = ByteScanner(bytes: Array(text.utf8))
        guard let year = scanner.number(4), scanner.skip("-"), let month = scanner.number(2), scanner.skip("-"),
              let day = scanner.number(2), scanner.skip("T") || scanner.skip("t"),
              let hour = scanner.number(2), scanner.skip(":"), let minute = scanner.number(2), scanner.skip(":"),
              let second = scanner.number(2),
              (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day),
              hour < 24, minute < 60, second < 60 else { return nil }
        var nanoseconds = 0
        if scanner.skip(".") {
            var digits = 0
            while let digit = scanner.digit() {
                if digits < 9 { nanoseconds = nanoseconds * 10 + digit }
                digits += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 9) { nanoseconds *= 10 }
        }
        var offset = 0
        if !scanner.skip("Z"), !scanner.skip("z") {
            guard let sign = scanner.skip("+") ? 1 : scanner.skip("-") ? -1 : nil, let hours = scanner.number(2),
                  scanner.skip(":"), let minutes = scanner.number(2), hours < 24, minutes < 60 else { return nil }
            offset = sign * (hours * 3600 + minutes * 60)
        }
        guard scanner.atEnd else { return nil }
        let seconds = daysSince1970(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second - offset
        return (seconds, nanoseconds)
    }

    private struct ByteScanner {
        let bytes: [UInt8]
        var index = 0

        var atEnd: Bool { index == bytes.count }

        mutating func skip(_ character: Unicode.Scalar) -> Bool {
            guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
            index += 1
            return true
        }

        mutating func digit() -> Int? {
            guard index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) else { return nil }
            index += 1
            return Int(bytes[index - 1] - UInt8(ascii: "0"))
        }

        /// Exactly `count` decimal digits.
        mutating func number(_ count: Int) -> Int? {
            var value = 0
            for _ in 0..<count {
                guard let digit = digit() else { return nil }
                value = value * 10 + digit
            }
            return value
        }
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    private static func daysSince1970(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
