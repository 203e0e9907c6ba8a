import Testing
@testable import RelayAgent
import RelayShared

/// Which relay an agent with `relays` dials next: the pure rules behind the failover test.
@Suite struct RelayRotationTests {
    let a = HostPort(host: "relay-a", port: 8443)
    let b = HostPort(host: "relay-b", port: 8443)
    let c = HostPort(host: "relay-c", port: 8443)

    @Test func failuresAndDrainsWalkTheListInOrderAndWrapAround() {
        var rotation = RelayRotation(relays: [a, b, c], start: 1)
        #expect(rotation.target == b)
        let changed1 = rotation.failed(welcomed: true)
        #expect(changed1)
        #expect(rotation.target == c)
        let changed2 = rotation.drained(redirect: nil)
        #expect(changed2)
        #expect(rotation.target == a)
        let changed3 = rotation.failed(welcomed: false)
        #expect(changed3)
        #expect(rotation.target == b)
    }

    @Test func oneRelayIsAlwaysDialledAgain() {
        var rotation = RelayRotation(relays: [a])
        let changed4 = rotation.failed(welcomed: true)
        #expect(!changed4)
        let changed5 = rotation.drained(redirect: nil)
        #expect(!changed5)
        #expect(rotation.target == a)
    }

    @Test func aRedirectIsFollowedAndLeftForTheConfiguredRelayWhenUnreachable() {
        let elsewhere = HostPort(host: "relay-x", port: 9443)
        var rotation = RelayRotation(relays: [a, b], start: 0)
        let changed6 = rotation.drained(redirect: elsewhere)
        #expect(changed6)
        #expect(rotation.target == elsewhere && rotation.isRedirected)
        // Welcomed there, then lost: it tries the same redirect again.
        let changed7 = rotation.failed(welcomed: true)
        #expect(!changed7)
        #expect(rotation.target == elsewhere)
        // Unreachable: back to the configured relay it came from.
        let changed8 = rotation.failed(welcomed: false)
        #expect(changed8)
        #expect(rotation.target == a && !rotation.isRedirected)
        // A drain naming a configured relay goes there, as a configured relay.
        let changed9 = rotation.drained(redirect: b)
        #expect(changed9)
        #expect(rotation.target == b && !rotation.isRedirected)
    }

    @Test func agentsStartAtRandomSoAFleetSpreadsOverTheReplicas() {
        var counts: [HostPort: Int] = [:]
        for _ in 0..<300 { counts[RelayRotation(relays: [a, b, c]).target, default: 0] += 1 }
        // Expected 100 each; outside 50...150 is far beyond chance.
        for relay in [a, b, c] { #expect((50...150).contains(counts[relay] ?? 0), "\(counts)") }
    }
}
