import Foundation
import Testing
@testable import RelayShared

/// Inputs the fuzz targets (Fuzz/, scripts/fuzz.sh) found in relay-server and relay-agent
/// parsers, kept as regression tests; the comment names the target that found each.
@Suite struct FuzzFindingsTests {
    /// Targets `relay-config` and `agent-config`: a duration too large for Int64 milliseconds
    /// (a float such as `1e300` or `inf`, or a unit count that overflows on multiplying or
    /// adding) trapped instead of being rejected, so relay-server or relay-agent died at start
    /// without naming the field.
    @Test(arguments: ["inf", "+inf", "1e300", "9223372036854775.808", "9999999999999999h", "106751991168d",
                      "9223372036854775807ms1ms", "2562047788015215h1h", "0x1p70"])
    func oversizedDurationsAreRejected(text: String) {
        #expect(ConfigDuration(parsing: text) == nil)
    }

    @Test func largestDurationsStillParse() {
        #expect(ConfigDuration(parsing: "9223372036854775807ms")?.milliseconds == Int64.max)
        let days: Int64 = 106_751_991_167
        #expect(ConfigDuration(parsing: "\(days)d")?.duration == .milliseconds(days * 86_400_000))
        #expect(ConfigDuration(parsing: "1.5")?.milliseconds == 1500)
    }
}
