/// Exponential backoff with full jitter: each delay is random in [initial, min(max, initial·2ⁿ)],
/// so agents that lost the relay together do not come back together.
struct Backoff: Sendable {
    let initial: Duration
    let maximum: Duration
    private(set) var attempt = 0

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    mutating func next() -> Duration {
        let ceiling = min(maximum, initial * Double(1 << min(attempt, 20)))
        attempt += 1
        let low = Double(initial.components.seconds) + Double(initial.components.attoseconds) / 1e18
        let high = Double(ceiling.components.seconds) + Double(ceiling.components.attoseconds) / 1e18
        return .milliseconds(Int64(Double.random(in: low...max(low, high)) * 1000))
    }

    mutating func reset() { attempt = 0 }
}
