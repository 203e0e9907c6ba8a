// Cron expressions as GitLab freeze periods write them: parse errors name the field, next()
// works on the wall clock of the freeze period's time zone (DST gaps skipped, repeated times
// fire once), and a FreezeWindow is frozen between a start and the following end.

import Foundation
import Testing
@testable import RelayServer

@Suite struct CronScheduleTests {
    // MARK: Parsing

    @Test(arguments: [
        ("", "the expression is empty"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
        ("0 0 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 6"),
        ("0 22 * * 1-5 Europe/Berlin", "expected 5 fields (minute hour day-of-month month day-of-week), found 6"),
        ("0 25 * * *", "field 2 (hour): 25 is out of range 0-23"),
        ("60 * * * *", "field 1 (minute): 60 is out of range 0-59"),
        ("0 0 0 * *", "field 3 (day-of-month): 0 is out of range 1-31"),
        ("0 0 * 13 *", "field 4 (month): 13 is out of range 1-12"),
        ("0 0 * * 8", "field 5 (day-of-week): 8 is out of range 0-7"),
        ("*/0 * * * *", "field 1 (minute): step 0 in '*/0' must be at least 1"),
        ("*/x * * * *", "field 1 (minute): step 'x' in '*/x' is not a number"),
        ("1/2/3 * * * *", "field 1 (minute): '1/2/3' has more than one '/'"),
        ("a * * * *", "field 1 (minute): 'a' is not a number"),
        ("MON 0 * * *", "field 1 (minute): 'MON' is not a number"),
        ("0 0 * FOO *", "field 4 (month): 'FOO' is not a month number (1-12) or name (JAN-DEC)"),
        ("0 0 * * FUN", "field 5 (day-of-week): 'FUN' is not a weekday number (0-7) or name (SUN-SAT)"),
        ("0 0 L * *", "field 3 (day-of-month): 'L' is a non-standard extension (L, W, #, ?, %) that is not supported"),
        ("0 0 15W * *", "field 3 (day-of-month): '15W' is a non-standard extension (L, W, #, ?, %) that is not supported"),
        ("0 0 * * 5#2", "field 5 (day-of-week): '5#2' is a non-standard extension (L, W, #, ?, %) that is not supported"),
        ("0 0 ? * MON", "field 3 (day-of-month): '?' is a non-standard extension (L, W, #, ?, %) that is not supported"),
        ("0 22-2 * * *", "field 2 (hour): range 22-2 is reversed (ranges do not wrap around; write it as two ranges)"),
        ("0 0 * * FRI-MON", "field 5 (day-of-week): range FRI-MON is reversed (ranges do not wrap around; write it as two ranges)"),
        ("0 0 1,,2 * *", "field 3 (day-of-month): '1,,2' has an empty list item"),
        ("0 0 1- * *", "field 3 (day-of-month): a range is missing a bound"),
        ("0 0 * * MON-FRI-SAT", "field 5 (day-of-week): 'MON-FRI-SAT' is not a value, range or step"),
        ("@reboot", "@reboot names no time and cannot be scheduled"),
        ("@often", "unknown macro @often (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"),
        ("@daily 5", "@daily stands for a whole expression and takes no further fields"),
    ])
    func rejectsWithAMessageNamingTheField(text: String, message: String) {
        do {
            let schedule = try CronSchedule(text)
            Issue.record("'\(text)' was accepted as \(schedule)")
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func theErrorCarriesTheFieldNumberAndReason() {
        do {
            _ = try CronSchedule("0 25 * * *")
            Issue.record("0 25 * * * was accepted")
        } catch {
            #expect(error == CronError(field: 2, reason: "25 is out of range 0-23"))
        }
    }

    @Test(arguments: [
        "@YEARLY", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly",
        "0 0 * jan-Mar sun", "0 0 * * 5-7", "0 0 * * FRI-SUN", "  0\t0 * * *  ", "5/15 * * * *",
        "0-59/20 */6 1-31/10 */3 0-7/2", "0,30 9,12-14 1,15 JAN,jul mon,Wed",
    ])
    func acceptsStandardSpellings(text: String) throws {
        let schedule = try CronSchedule(text)
        #expect(schedule.text == text)
        #expect(schedule.description == text)
    }

    @Test(arguments: [
        ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"), ("@weekly", "0 0 * * 7"), ("@weekly", "0 0 * * sun"),
        ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *"),
        ("0 0 * * FRI-SUN", "0 0 * * 5-7"), ("0 0 * * FRI-SUN", "0 0 * * 0,5,6"),
        ("0 0 * jan-MAR *", "0 0 * 1-3 *"), ("5/15 * * * *", "5,20,35,50 * * * *"),
        ("10-40/15 * * * *", "10,25,40 * * * *"), ("0 0 * * */2", "0 0 * * 0,2,4,6"),
    ])
    func equivalentSpellingsFireAtTheSameTimes(one: String, other: String) throws {
        let utc = Self.zone("UTC")
        let from = Self.wall("2025-06-01 00:00", utc)
        #expect(try Self.sequence(one, after: from, utc, count: 12) == Self.sequence(other, after: from, utc, count: 12))
    }

    // MARK: next()

    @Test func businessHoursInBerlin() throws {
        let rule = "*/15 9-17 * * MON-FRI"
        let berlin = Self.zone("Europe/Berlin")
        #expect(try Self.sequence(rule, after: Self.wall("2025-06-13 17:50", berlin), berlin, count: 3)
            == ["2025-06-16 09:00 +0200 Mon", "2025-06-16 09:15 +0200 Mon", "2025-06-16 09:30 +0200 Mon"])
        // Strictly after: a matching minute is not its own successor; seconds are ignored.
        #expect(try Self.sequence(rule, after: Self.wall("2025-06-16 09:00", berlin), berlin, count: 1) == ["2025-06-16 09:15 +0200 Mon"])
        #expect(try Self.sequence(rule, after: Self.wall("2025-06-16 09:14:59", berlin), berlin, count: 1) == ["2025-06-16 09:15 +0200 Mon"])
        #expect(try Self.sequence(rule, after: Self.wall("2025-06-18 12:07", berlin), berlin, count: 1) == ["2025-06-18 12:15 +0200 Wed"])
        #expect(try Self.sequence(rule, after: Self.wall("2025-06-18 17:45", berlin), berlin, count: 1) == ["2025-06-19 09:00 +0200 Thu"])
        #expect(try Self.sequence(rule, after: Self.wall("2025-01-10 17:45", berlin), berlin, count: 1) == ["2025-01-13 09:00 +0100 Mon"])
        #expect(try Self.sequence(rule, after: Self.wall("2025-12-31 23:59", berlin), berlin, count: 1) == ["2026-01-01 09:00 +0100 Thu"])
        let next = try CronSchedule(rule).next(after: Self.wall("2025-06-13 17:50", berlin), in: berlin)
        #expect(next == Self.instant("2025-06-16T07:00:00Z"))
    }

    @Test func yearlyAndRareDays() throws {
        let utc = Self.zone("UTC"), berlin = Self.zone("Europe/Berlin")
        #expect(try Self.sequence("0 0 1 1 *", after: Self.wall("2025-01-01 00:00", utc), utc, count: 3)
            == ["2026-01-01 00:00 +0000 Thu", "2027-01-01 00:00 +0000 Fri", "2028-01-01 00:00 +0000 Sat"])
        #expect(try Self.sequence("0 0 1 1 *", after: Self.wall("2024-12-31 23:59:59", utc), utc, count: 1) == ["2025-01-01 00:00 +0000 Wed"])
        #expect(try CronSchedule("0 0 1 1 *").next(after: Self.wall("2025-06-01 00:00", berlin), in: berlin)
            == Self.instant("2025-12-31T23:00:00Z"))
        #expect(try Self.sequence("0 0 29 2 *", after: Self.wall("2025-03-01 00:00", utc), utc, count: 2)
            == ["2028-02-29 00:00 +0000 Tue", "2032-02-29 00:00 +0000 Sun"])
        #expect(try Self.sequence("0 0 31 * *", after: Self.wall("2025-01-31 00:00", utc), utc, count: 2)
            == ["2025-03-31 00:00 +0000 Mon", "2025-05-31 00:00 +0000 Sat"])
    }

    /// Vixie cron: with both day fields restricted, either may match.
    @Test func dayOfMonthOrDayOfWeek() throws {
        let utc = Self.zone("UTC")
        let june = Self.wall("2025-06-01 00:00", utc)
        #expect(try Self.sequence("0 0 13 * FRI", after: june, utc, count: 8) == [
            "2025-06-06 00:00 +0000 Fri", "2025-06-13 00:00 +0000 Fri", "2025-06-20 00:00 +0000 Fri",
            "2025-06-27 00:00 +0000 Fri", "2025-07-04 00:00 +0000 Fri", "2025-07-11 00:00 +0000 Fri",
            "2025-07-13 00:00 +0000 Sun", "2025-07-18 00:00 +0000 Fri",
        ])
        #expect(try Self.sequence("0 0 13 * *", after: june, utc, count: 2) == ["2025-06-13 00:00 +0000 Fri", "2025-07-13 00:00 +0000 Sun"])
        #expect(try Self.sequence("0 0 * * FRI", after: june, utc, count: 2) == ["2025-06-06 00:00 +0000 Fri", "2025-06-13 00:00 +0000 Fri"])
        // `*/2` starts with `*`, so it is unrestricted: both must match (odd days that are Fridays).
        #expect(try Self.sequence("0 0 */2 * FRI", after: june, utc, count: 3)
            == ["2025-06-13 00:00 +0000 Fri", "2025-06-27 00:00 +0000 Fri", "2025-07-11 00:00 +0000 Fri"])
        // `1-31` is restricted: every day matches through day-of-month.
        #expect(try Self.sequence("0 0 1-31 * FRI", after: june, utc, count: 2) == ["2025-06-02 00:00 +0000 Mon", "2025-06-03 00:00 +0000 Tue"])
        // man 5 crontab: "30 4 1,15 * 5" runs on the 1st and 15th and every Friday.
        #expect(try Self.sequence("30 4 1,15 * 5", after: Self.wall("2025-07-31 12:00", utc), utc, count: 4) == [
            "2025-08-01 04:30 +0000 Fri", "2025-08-08 04:30 +0000 Fri", "2025-08-15 04:30 +0000 Fri", "2025-08-22 04:30 +0000 Fri",
        ])
        // The month still has to match: Mondays in February.
        #expect(try CronSchedule("0 0 30 2 MON").next(after: june, in: utc) == Self.instant("2026-02-02T00:00:00Z"))
    }

    /// Europe/Berlin 2025: 02:00 → 03:00 on March 30, 03:00 → 02:00 on October 26.
    @Test func daylightSavingTransitionsInBerlin() throws {
        let berlin = Self.zone("Europe/Berlin")
        // Spring forward: there is no 02:30 on March 30.
        #expect(try Self.sequence("30 2 * * *", after: Self.wall("2025-03-28 12:00", berlin), berlin, count: 3)
            == ["2025-03-29 02:30 +0100 Sat", "2025-03-31 02:30 +0200 Mon", "2025-04-01 02:30 +0200 Tue"])
        #expect(try Self.sequence("*/30 * * * *", after: Self.wall("2025-03-30 01:15", berlin), berlin, count: 3)
            == ["2025-03-30 01:30 +0100 Sun", "2025-03-30 03:00 +0200 Sun", "2025-03-30 03:30 +0200 Sun"])
        // Fall back: 02:30 happens twice on October 26 and fires once, at the first (CEST).
        #expect(try Self.sequence("30 2 * * *", after: Self.wall("2025-10-25 12:00", berlin), berlin, count: 2)
            == ["2025-10-26 02:30 +0200 Sun", "2025-10-27 02:30 +0100 Mon"])
        let twoThirty = try CronSchedule("30 2 * * *")
        #expect(twoThirty.next(after: Self.wall("2025-10-25 12:00", berlin), in: berlin) == Self.instant("2025-10-26T00:30:00Z"))
        // Between the two 02:30s, and during the repeated hour's second pass: next day.
        #expect(twoThirty.next(after: Self.instant("2025-10-26T00:45:00Z"), in: berlin) == Self.instant("2025-10-27T01:30:00Z"))
        #expect(twoThirty.next(after: Self.instant("2025-10-26T01:10:00Z"), in: berlin) == Self.instant("2025-10-27T01:30:00Z"))
        #expect(try Self.sequence("*/30 * * * *", after: Self.wall("2025-10-26 01:45", berlin), berlin, count: 3)
            == ["2025-10-26 02:00 +0200 Sun", "2025-10-26 02:30 +0200 Sun", "2025-10-26 03:00 +0100 Sun"])
        #expect(try Self.sequence("0 * * * *", after: Self.wall("2025-10-26 01:30", berlin), berlin, count: 3)
            == ["2025-10-26 02:00 +0200 Sun", "2025-10-26 03:00 +0100 Sun", "2025-10-26 04:00 +0100 Sun"])
    }

    @Test func unusualTransitions() throws {
        // America/Santiago springs forward at midnight (2025-09-07 00:00 → 01:00).
        let santiago = Self.zone("America/Santiago")
        #expect(try Self.sequence("0 0 * * *", after: Self.wall("2025-09-05 12:00", santiago), santiago, count: 2)
            == ["2025-09-06 00:00 -0400 Sat", "2025-09-08 00:00 -0300 Mon"])
        // Australia/Lord_Howe moves by 30 minutes (2025-10-05 02:00 → 02:30).
        let lordHowe = Self.zone("Australia/Lord_Howe")
        #expect(try Self.sequence("15 2 * * *", after: Self.wall("2025-10-04 12:00", lordHowe), lordHowe, count: 1)
            == ["2025-10-06 02:15 +1100 Mon"])
        // Pacific/Apia skipped 2011-12-30 altogether.
        let apia = Self.zone("Pacific/Apia")
        #expect(try Self.sequence("0 12 * * *", after: Self.wall("2011-12-29 13:00", apia), apia, count: 1)
            == ["2011-12-31 12:00 +1400 Sat"])
    }

    @Test(arguments: ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
    func impossibleDatesGiveUpQuickly(text: String) throws {
        let utc = Self.zone("UTC")
        let schedule = try CronSchedule(text)
        let started = ContinuousClock.now
        #expect(schedule.next(after: Self.wall("2025-06-01 00:00", utc), in: utc) == nil)
        #expect(ContinuousClock.now - started < .milliseconds(200))
    }

    @Test func theSearchHorizonIsFiveYears() throws {
        let utc = Self.zone("UTC")
        // 2096-02-29 → 2104-02-29 (2100 is not a leap year): beyond the horizon.
        #expect(try CronSchedule("0 0 29 2 *").next(after: Self.wall("2097-03-01 00:00", utc), in: utc) == nil)
    }

    @Test func aSparseExpressionIsFast() throws {
        let berlin = Self.zone("Europe/Berlin")
        let leapDays = try CronSchedule("30 4 29 2 *")
        let base = Self.wall("2025-01-01 00:00", berlin)
        let started = ContinuousClock.now
        var found = 0
        for hour in 0..<10_000 where leapDays.next(after: base.addingTimeInterval(Double(hour) * 3600), in: berlin) != nil {
            found += 1
        }
        #expect(found == 10_000)
        // About 15 ms optimized; generous for debug builds and busy machines.
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    // MARK: FreezeWindow

    /// GitLab's example freeze: Friday 23:00 to Monday 07:00, New York time.
    @Test func weekendFreezeInNewYork() throws {
        let newYork = Self.zone("America/New_York")
        let window = FreezeWindow(start: try CronSchedule("0 23 * * FRI"), end: try CronSchedule("0 7 * * MON"), timeZone: newYork)
        func state(_ text: String) -> String {
            let state = window.state(at: Self.wall(text, newYork))
            return "\(state.frozen) \(Self.show(state.until, newYork))"
        }
        #expect(state("2025-06-14 12:00") == "true 2025-06-16 07:00 -0400 Mon") // Saturday noon
        #expect(window.state(at: Self.wall("2025-06-14 12:00", newYork)).until == Self.instant("2025-06-16T11:00:00Z"))
        #expect(state("2025-06-11 12:00") == "false nil") // Wednesday
        #expect(state("2025-06-13 22:59") == "false nil")
        #expect(state("2025-06-13 23:00") == "true 2025-06-16 07:00 -0400 Mon") // the start minute is frozen
        #expect(state("2025-06-16 06:59") == "true 2025-06-16 07:00 -0400 Mon")
        #expect(state("2025-06-16 07:00") == "false nil") // the end minute is not
        #expect(state("2025-06-16 07:01") == "false nil")
        // The weekend DST ends (2025-11-02): thaws at 07:00 EST.
        #expect(state("2025-11-02 12:00") == "true 2025-11-03 07:00 -0500 Mon")
        #expect(window.state(at: Self.wall("2025-11-02 12:00", newYork)).until == Self.instant("2025-11-03T12:00:00Z"))
    }

    @Test func freezeEdgeCases() throws {
        let newYork = Self.zone("America/New_York")
        let saturday = Self.wall("2025-06-14 12:00", newYork)
        // Start and end at the same minute: never frozen.
        let same = FreezeWindow(start: try CronSchedule("0 12 * * *"), end: try CronSchedule("0 12 * * *"), timeZone: newYork)
        for text in ["2025-06-14 11:59", "2025-06-14 12:00", "2025-06-14 12:01"] {
            let state = same.state(at: Self.wall(text, newYork))
            #expect(!state.frozen && state.until == nil)
        }
        // A start or an end that never comes: not frozen.
        let neverStarts = FreezeWindow(start: try CronSchedule("0 0 30 2 *"), end: try CronSchedule("0 7 * * MON"), timeZone: newYork)
        #expect(!neverStarts.state(at: saturday).frozen)
        let neverEnds = FreezeWindow(start: try CronSchedule("0 23 * * FRI"), end: try CronSchedule("0 0 30 2 *"), timeZone: newYork)
        #expect(!neverEnds.state(at: saturday).frozen)
        // A Christmas freeze across the new year.
        let berlin = Self.zone("Europe/Berlin")
        let christmas = FreezeWindow(start: try CronSchedule("0 0 20 DEC *"), end: try CronSchedule("0 9 2 JAN *"), timeZone: berlin)
        #expect(christmas.state(at: Self.wall("2025-12-31 12:00", berlin)).until == Self.instant("2026-01-02T08:00:00Z"))
        #expect(!christmas.state(at: Self.wall("2026-01-02 09:00", berlin)).frozen)
        #expect(!christmas.state(at: Self.wall("2025-12-19 23:59", berlin)).frozen)
    }

    // MARK: Helpers

    private static func zone(_ identifier: String) -> TimeZone { TimeZone(identifier: identifier)! }

    private static func instant(_ iso8601: String) -> Date { ISO8601DateFormatter().date(from: iso8601)! }

    /// "2025-06-13 17:50" or "2025-06-13 17:50:30" on the wall clock of `timeZone`.
    private static func wall(_ text: String, _ timeZone: TimeZone) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let numbers = text.split(whereSeparator: { " -:".contains($0) }).map { Int($0)! }
        var components = DateComponents()
        components.year = numbers[0]
        components.month = numbers[1]
        components.day = numbers[2]
        components.hour = numbers[3]
        components.minute = numbers[4]
        components.second = numbers.count > 5 ? numbers[5] : 0
        return calendar.date(from: components)!
    }

    /// "2025-06-16 09:00 +0200 Mon": wall clock, offset and weekday in `timeZone`.
    private static func show(_ date: Date?, _ timeZone: TimeZone) -> String {
        guard let date else { return "nil" }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: date)
        func pad(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let offset = timeZone.secondsFromGMT(for: date)
        let sign = offset < 0 ? "-" : "+"
        let day: String = pad(c.year!, 4) + "-" + pad(c.month!, 2) + "-" + pad(c.day!, 2)
        let time: String = pad(c.hour!, 2) + ":" + pad(c.minute!, 2)
        let zone: String = sign + pad(abs(offset) / 3600, 2) + pad(abs(offset) % 3600 / 60, 2)
        let weekday = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][c.weekday! - 1]
        return day + " " + time + " " + zone + " " + weekday
    }

    /// The next `count` firings after `start`, shown on the wall clock.
    private static func sequence(_ text: String, after start: Date, _ timeZone: TimeZone, count: Int) throws -> [String] {
        let schedule = try CronSchedule(text)
        var shown: [String] = []
        var cursor = start
        for _ in 0..<count {
            guard let next = schedule.next(after: cursor, in: timeZone) else {
                shown.append("nil")
                break
            }
            shown.append(show(next, timeZone))
            cursor = next
        }
        return shown
    }
}
