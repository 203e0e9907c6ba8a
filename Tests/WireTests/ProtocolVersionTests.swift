import Testing
import Wire

@Suite struct ProtocolVersionTests {
    @Test func parsesAndPrints() {
        #expect(ProtocolVersion("1.7") == ProtocolVersion(major: 1, minor: 7))
        #expect(ProtocolVersion("1.7")?.description == "1.7")
        #expect(ProtocolVersion("1") == nil)
        #expect(ProtocolVersion("a.b") == nil)
        #expect(ProtocolVersion("-1.0") == nil)
    }

    @Test func compatibilityFollowsTheMajorVersion() {
        let v1_0 = ProtocolVersion(major: 1, minor: 0)
        #expect(v1_0.isCompatible(with: ProtocolVersion(major: 1, minor: 9)))
        #expect(!v1_0.isCompatible(with: ProtocolVersion(major: 2, minor: 0)))
        #expect(v1_0 < ProtocolVersion(major: 1, minor: 1))
    }
}
