import Foundation

/// A five-field cron expression, `minute hour day-of-month month day-of-week`, with the
/// classic Vixie-cron semantics GitLab freeze periods use.
///
/// Each field is `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (`a` to the
/// field's maximum), or a comma-separated list of those. The month field also takes `JAN`…`DEC`
/// and the day-of-week field `SUN`…`SAT` (any case); day-of-week runs 0–7, where both 0 and 7
/// are Sunday (and `SUN` ending a range, as in `FRI-SUN`, means 7). `@yearly` (`@annually`),
/// `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for their usual
/// expressions.
///
/// Days follow Vixie's rule: when both day-of-month and day-of-week are restricted (neither
/// field starts with `*`), a day matches when *either* does, so `0 0 13 * FRI` fires on every
/// 13th and on every Friday. Otherwise both must match. A field such as `*/2` starts with `*` and
/// so counts as unrestricted here, as in Vixie cron (fugit would treat it as restricted; the two
/// only differ when both day fields are written that way).
///
/// Not supported (rejected with a message): fugit's and Quartz's extensions — a seconds field,
/// a time zone after the fields, `L`, `W`, `#`, `?`, `%` — and ranges that wrap around
/// (`22-2`; write `22-23,0-2`).
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    /// The expression as written.
    public let text: String

    private let minutes: ValueSet
    private let hours: ValueSet
    private let daysOfMonth: ValueSet
    private let months: ValueSet
    private let daysOfWeek: ValueSet
    /// Both day fields are restricted: a day matches when either does (Vixie's rule).
    private let eitherDayMatches: Bool

    /// How far ``next(after:in:)`` looks before concluding the expression never fires again
    /// (`0 0 30 2 *`). Covers every leap day except across 2100, which is not a leap year.
    static let searchHorizonInYears = 5

    /// Parses `text`; the error names the field and what is wrong with it.
    public init(_ text: String) throws(CronError) {
        self.text = text
        let words = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard let first = words.first else { throw CronError(reason: "the expression is empty") }

        var fields = words
        if first.hasPrefix("@") {
            guard words.count == 1 else {
                throw CronError(reason: "\(first) stands for a whole expression and takes no further fields")
            }
            guard let expansion = Self.macros[first.lowercased()] else {
                if first.lowercased() == "@reboot" {
                    throw CronError(reason: "@reboot names no time and cannot be scheduled")
                }
                throw CronError(reason: "unknown macro \(first) (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)")
            }
            fields = expansion.split(separator: " ").map(String.init)
        }
        guard fields.count == 5 else {
            throw CronError(reason: "expected 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)")
        }

        minutes = try Field.minute.parse(fields[0])
        hours = try Field.hour.parse(fields[1])
        daysOfMonth = try Field.dayOfMonth.parse(fields[2])
        months = try Field.month.parse(fields[3])
        daysOfWeek = try Field.dayOfWeek.parse(fields[4])
        eitherDayMatches = !fields[2].hasPrefix("*") && !fields[4].hasPrefix("*")
    }

    public var description: String { text }

    private static let macros: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    ]

    /// The first minute strictly after `date` whose wall-clock time in `timeZone` matches, or nil
    /// when there is none within ``searchHorizonInYears`` years.
    ///
    /// Matching happens on the wall clock. A wall time that a spring-forward gap skips does not
    /// happen, so it does not fire that day (`30 2 * * *` skips the day Europe/Berlin jumps from
    /// 02:00 to 03:00). A wall time that a fall-back repeats fires at its first occurrence only;
    /// during the repeated hour's second pass nothing in that hour fires again.
    ///
    /// The search jumps over months, days and hours that cannot match, so its cost depends on how
    /// many days it inspects (at most about 1,830), not on the number of minutes.
    public func next(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let now = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date)
        guard var year = now.year, var month = now.month, var day = now.day,
              var hour = now.hour, var minute = now.minute else { return nil }
        minute += 1 // strictly after; out-of-range values roll over below

        let lastYear = year + Self.searchHorizonInYears
        while year <= lastYear {
            guard let matchingMonth = months.first(atOrAfter: month) else {
                (year, month, day, hour, minute) = (year + 1, 1, 1, 0, 0)
                continue
            }
            if matchingMonth != month { (month, day, hour, minute) = (matchingMonth, 1, 0, 0) }
            guard day <= CivilDay.days(inMonth: month, of: year) else {
                (month, day, hour, minute) = (month + 1, 1, 0, 0)
                continue
            }
            guard matchesDay(CivilDay(year: year, month: month, day: day)) else {
                (day, hour, minute) = (day + 1, 0, 0)
                continue
            }
            guard let matchingHour = hours.first(atOrAfter: hour) else {
                (day, hour, minute) = (day + 1, 0, 0)
                continue
            }
            if matchingHour != hour { (hour, minute) = (matchingHour, 0) }
            guard let matchingMinute = minutes.first(atOrAfter: minute) else {
                (hour, minute) = (hour + 1, 0)
                continue
            }
            minute = matchingMinute
            let wallClock = CivilDay(year: year, month: month, day: day).secondsSinceEpoch + hour * 3600 + minute * 60
            if let instant = Self.firstInstant(showing: wallClock, in: timeZone), instant > date {
                return instant
            }
            minute += 1
        }
        return nil
    }

    private func matchesDay(_ day: CivilDay) -> Bool {
        let dayOfMonth = daysOfMonth.contains(day.day)
        let dayOfWeek = daysOfWeek.contains(day.weekday)
        return eitherDayMatches ? (dayOfMonth || dayOfWeek) : (dayOfMonth && dayOfWeek)
    }

    /// The earliest instant whose wall clock in `timeZone` reads `wallClock` (seconds since
    /// 1970-01-01 00:00 on the wall); nil when a transition skips it.
    private static func firstInstant(showing wallClock: Int, in timeZone: TimeZone) -> Date? {
        // The offsets in force a day either side cover any transition near this wall time.
        var earliest: Int?
        var tried: [Int] = []
        for probe in [wallClock - 86_400, wallClock, wallClock + 86_400] {
            let offset = timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(probe)))
            guard !tried.contains(offset) else { continue }
            tried.append(offset)
            let instant = wallClock - offset
            guard timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(instant))) == offset else { continue }
            earliest = min(earliest ?? instant, instant)
        }
        return earliest.map { Date(timeIntervalSince1970: TimeInterval($0)) }
    }
}

/// Why a cron expression was rejected: which field (when one is at fault) and what is wrong.
public struct CronError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The field at fault, 1-based as people count them (2 is the hour); nil when the
    /// expression as a whole is malformed.
    public var field: Int?
    /// What is wrong, without the position: `25 is out of range 0-23`.
    public var reason: String

    public init(field: Int? = nil, reason: String) {
        self.field = field
        self.reason = reason
    }

    /// `field 2 (hour): 25 is out of range 0-23`
    public var description: String {
        guard let field, let known = CronSchedule.Field(rawValue: field - 1) else { return reason }
        return "field \(field) (\(known.name)): \(reason)"
    }
}

/// A window that opens at every `start` and closes at the next `end`, both read on the wall
/// clock of `timeZone`: a GitLab deploy freeze period (`freeze_start`, `freeze_end`,
/// `cron_timezone`).
public struct FreezeWindow: Sendable, Equatable {
    public var start: CronSchedule
    public var end: CronSchedule
    public var timeZone: TimeZone

    public init(start: CronSchedule, end: CronSchedule, timeZone: TimeZone) {
        self.start = start
        self.end = end
        self.timeZone = timeZone
    }

    /// Whether the window is frozen at `now` and, if so, when it thaws.
    ///
    /// Frozen exactly when the next `end` after `now` comes before the next `start` after `now`;
    /// `until` is then that end (nil when not frozen). For windows whose starts and ends
    /// alternate, that is GitLab's rule: the last start is more recent than the last end.
    ///
    /// - The start minute itself is frozen; the end minute itself is not.
    /// - `start` and `end` firing at the same minute: never frozen.
    /// - Several starts before one end (`start` hourly, `end` weekly): frozen only from the last
    ///   start before that end. GitLab instead stays frozen from the first start after an end.
    /// - `end` or `start` not firing within ``CronSchedule/searchHorizonInYears`` years: not
    ///   frozen (nothing thaws it, or nothing opens it).
    public func state(at now: Date) -> (frozen: Bool, until: Date?) {
        guard let nextEnd = end.next(after: now, in: timeZone),
              let nextStart = start.next(after: now, in: timeZone),
              nextEnd < nextStart else { return (false, nil) }
        return (true, nextEnd)
    }
}

// MARK: - Parsing

extension CronSchedule {
    /// The five fields, in order.
    enum Field: Int, CaseIterable, Sendable {
        case minute, hour, dayOfMonth, month, dayOfWeek

        var name: String {
            switch self {
            case .minute: "minute"
            case .hour: "hour"
            case .dayOfMonth: "day-of-month"
            case .month: "month"
            case .dayOfWeek: "day-of-week"
            }
        }

        /// Values as written; day-of-week 7 is stored as 0.
        var bounds: ClosedRange<Int> {
            switch self {
            case .minute: 0...59
            case .hour: 0...23
            case .dayOfMonth: 1...31
            case .month: 1...12
            case .dayOfWeek: 0...7
            }
        }

        /// What `*` means (day-of-week: 0-6, since 7 repeats Sunday).
        private var wholeRange: ClosedRange<Int> { self == .dayOfWeek ? 0...6 : bounds }

        private var names: [String] {
            switch self {
            case .month: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
            case .dayOfWeek: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
            default: []
            }
        }

        private func error(_ reason: String) -> CronError { CronError(field: rawValue + 1, reason: reason) }

        /// `1,5-10,*/15` → the set of values it names.
        func parse(_ text: String) throws(CronError) -> ValueSet {
            var set = ValueSet()
            for item in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard !item.isEmpty else { throw error("'\(text)' has an empty list item") }
                set.formUnion(try parseItem(String(item)))
            }
            return set
        }

        /// One list item: `*`, `n`, `a-b`, each optionally followed by `/step`.
        private func parseItem(_ item: String) throws(CronError) -> ValueSet {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw error("'\(item)' has more than one '/'") }
            var step = 1
            if parts.count == 2 {
                guard parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(parts[1]) else {
                    throw error("step '\(parts[1])' in '\(item)' is not a number")
                }
                guard value >= 1 else { throw error("step \(value) in '\(item)' must be at least 1") }
                step = value
            }

            let range: ClosedRange<Int>
            let bounds = parts[0].split(separator: "-", omittingEmptySubsequences: false)
            if parts[0] == "*" {
                range = wholeRange
            } else if bounds.count == 1 {
                let value = try self.value(String(bounds[0]), endingRange: false)
                // `a/n` runs from a to the field's maximum, as in cronie and fugit.
                range = value...(parts.count == 2 ? wholeRange.upperBound : value)
            } else if bounds.count == 2 {
                let low = try self.value(String(bounds[0]), endingRange: false)
                let high = try self.value(String(bounds[1]), endingRange: true)
                guard low <= high else {
                    throw error("range \(bounds[0])-\(bounds[1]) is reversed (ranges do not wrap around; write it as two ranges)")
                }
                range = low...high
            } else {
                throw error("'\(item)' is not a value, range or step")
            }

            var set = ValueSet()
            for value in stride(from: range.lowerBound, through: range.upperBound, by: step) {
                set.insert(self == .dayOfWeek && value == 7 ? 0 : value)
            }
            return set
        }

        /// A number or, for month and day-of-week, a name. `SUN` ending a day-of-week range is 7.
        private func value(_ token: String, endingRange: Bool) throws(CronError) -> Int {
            guard !token.isEmpty else { throw error("a range is missing a bound") }
            if token.allSatisfy({ $0.isASCII && $0.isNumber }) {
                guard let value = Int(token), bounds.contains(value) else {
                    throw error("\(token) is out of range \(bounds.lowerBound)-\(bounds.upperBound)")
                }
                return value
            }
            if let index = names.firstIndex(of: token.uppercased()) {
                let value = self == .month ? index + 1 : index
                return self == .dayOfWeek && endingRange && value == 0 ? 7 : value
            }
            if CronSchedule.isExtension(token.uppercased()) {
                throw error("'\(token)' is a non-standard extension (L, W, #, ?, %) that is not supported")
            }
            switch self {
            case .month: throw error("'\(token)' is not a month number (1-12) or name (JAN-DEC)")
            case .dayOfWeek: throw error("'\(token)' is not a weekday number (0-7) or name (SUN-SAT)")
            default: throw error("'\(token)' is not a number")
            }
        }
    }

    /// fugit's and Quartz's `L`, `LW`, `15W`, `5L`, `5#2`, `?`, `%`: worth naming when rejected.
    private static func isExtension(_ token: String) -> Bool {
        if token == "?" || token == "L" || token == "LW" { return true }
        if token.contains("#") || token.contains("%") { return true }
        guard token.hasSuffix("L") || token.hasSuffix("W") else { return false }
        let number = token.dropLast()
        return !number.isEmpty && number.allSatisfy { $0.isASCII && $0.isNumber }
    }
}

extension CronSchedule {
    /// A set of small non-negative integers (0...63) as a bit mask.
    struct ValueSet: Sendable, Equatable {
        private var bits: UInt64 = 0

        mutating func insert(_ value: Int) { bits |= 1 << UInt64(value) }
        mutating func formUnion(_ other: ValueSet) { bits |= other.bits }

        func contains(_ value: Int) -> Bool { value >= 0 && value < 64 && bits & (1 << UInt64(value)) != 0 }

        /// The smallest member that is at least `value`.
        func first(atOrAfter value: Int) -> Int? {
            guard value < 64 else { return nil }
            let candidates = bits & (UInt64.max << UInt64(max(value, 0)))
            return candidates == 0 ? nil : candidates.trailingZeroBitCount
        }
    }
}

// MARK: - Calendar arithmetic

extension CronSchedule {
    /// A date in the proleptic Gregorian calendar (what `Calendar(identifier: .gregorian)` uses for
    /// any date cron will meet), with the arithmetic the search needs and no time zone.
    struct CivilDay: Sendable, Equatable {
        var year: Int
        var month: Int
        var day: Int

        static func isLeap(_ year: Int) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

        static func days(inMonth month: Int, of year: Int) -> Int {
            switch month {
            case 2: isLeap(year) ? 29 : 28
            case 4, 6, 9, 11: 30
            default: 31
            }
        }

        /// Days since 1970-01-01. Counts in 400-year cycles from a year that starts in March, so
        /// the leap day falls at the end of each year.
        var daysSinceEpoch: Int {
            let marchYear = month > 2 ? year : year - 1
            let cycle = (marchYear >= 0 ? marchYear : marchYear - 399) / 400
            let yearOfCycle = marchYear - cycle * 400
            let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
            let dayOfCycle = yearOfCycle * 365 + yearOfCycle / 4 - yearOfCycle / 100 + dayOfYear
            return cycle * 146_097 + dayOfCycle - 719_468 // 0000-03-01 to 1970-01-01 is 719,468 days
        }

        var secondsSinceEpoch: Int { daysSinceEpoch * 86_400 }

        /// 0 is Sunday. 1970-01-01 was a Thursday.
        var weekday: Int { ((daysSinceEpoch % 7) + 7 + 4) % 7 }
    }
}
