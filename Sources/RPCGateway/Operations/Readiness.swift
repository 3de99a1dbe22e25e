package import NIOCore

/// How `/readyz` decides: every route's upstream endpoint mapper is probed with a TCP connect
/// every ``interval`` (each attempt bounded by ``timeout``); a route is ready while its last
/// successful probe is younger than ``maximumAge``.
public struct ReadinessSettings: Sendable, Hashable {
    public var interval: Duration
    public var timeout: Duration
    public var maximumAge: Duration

    public init(interval: Duration = .seconds(10), timeout: Duration = .seconds(2), maximumAge: Duration = .seconds(30))
    {
        self.interval = interval
        self.timeout = timeout
        self.maximumAge = maximumAge
    }
}

/// What the probes of one route found so far. Times are monotonic (for ages) except
/// ``lastSuccessTime`` (wall clock, for display).
package struct UpstreamProbeState: Hashable, Sendable {
    package var lastAttempt: NIODeadline?
    package var lastSuccess: NIODeadline?
    package var lastSuccessTime: AuditTimestamp?
    /// Why the last failed attempt failed; cleared by a success.
    package var lastError: String?
    package var consecutiveFailures = 0
    /// A probe is running: the next tick skips this route rather than stacking connects.
    package var inProgress = false

    package init() {}

    package mutating func succeeded(at now: NIODeadline, wallClock: AuditTimestamp) {
        self.lastAttempt = now
        self.lastSuccess = now
        self.lastSuccessTime = wallClock
        self.lastError = nil
        self.consecutiveFailures = 0
        self.inProgress = false
    }

    package mutating func failed(at now: NIODeadline, error: String) {
        self.lastAttempt = now
        self.lastError = error
        self.consecutiveFailures += 1
        self.inProgress = false
    }
}

/// The answer of `/readyz`: ready when the gateway is not draining and every route's upstream
/// endpoint mapper answered a probe recently.
package struct ReadinessReport: Hashable, Sendable {
    package struct Route: Hashable, Sendable {
        package var name: String
        /// `address:port` of the upstream endpoint mapper that is probed.
        package var upstream: String
        package var ready: Bool
        /// Time since the last successful probe; `nil`: never succeeded.
        package var lastSuccessAge: Duration?
        package var lastSuccessTime: AuditTimestamp?
        package var lastError: String?
        package var consecutiveFailures: Int
        /// `false` for a transparent route: its servers differ per connection, so there is no one
        /// upstream to probe, and the route counts as ready.
        package var probed: Bool

        package init(
            name: String,
            upstream: String,
            ready: Bool,
            lastSuccessAge: Duration?,
            lastSuccessTime: AuditTimestamp? = nil,
            lastError: String?,
            consecutiveFailures: Int,
            probed: Bool = true
        ) {
            self.name = name
            self.upstream = upstream
            self.ready = ready
            self.lastSuccessAge = lastSuccessAge
            self.lastSuccessTime = lastSuccessTime
            self.lastError = lastError
            self.consecutiveFailures = consecutiveFailures
            self.probed = probed
        }

        /// Why the route is not ready, in a few words; `nil` when it is.
        package var problem: String? {
            guard !self.ready else { return nil }
            var text: String
            if let age = self.lastSuccessAge {
                text = "upstream \(self.upstream) last reached \(DurationText.short(age)) ago"
            } else {
                text = "upstream \(self.upstream) not reached yet"
            }
            if let error = self.lastError { text += " (\(error))" }
            return text
        }
    }

    package var draining: Bool
    package var routes: [Route]

    package init(draining: Bool, routes: [Route]) {
        self.draining = draining
        self.routes = routes
    }

    package var isReady: Bool { !self.draining && self.routes.allSatisfy(\.ready) }

    package var failingRoutes: [Route] { self.routes.filter { !$0.ready } }

    /// Builds the report from each route's probe state (`nil`: not probed, ready). Pure: `now`
    /// is given.
    package static func evaluate(
        routes: [(name: String, upstream: String, probe: UpstreamProbeState?)],
        draining: Bool,
        now: NIODeadline,
        maximumAge: Duration
    ) -> ReadinessReport {
        let maximum = TimeAmount(maximumAge)
        let entries = routes.map { route -> Route in
            guard let probe = route.probe else {
                return Route(
                    name: route.name,
                    upstream: route.upstream,
                    ready: true,
                    lastSuccessAge: nil,
                    lastError: nil,
                    consecutiveFailures: 0,
                    probed: false
                )
            }
            let age = probe.lastSuccess.map { now - $0 }
            let ready = age.map { $0 < maximum } ?? false
            return Route(
                name: route.name,
                upstream: route.upstream,
                ready: ready,
                lastSuccessAge: age.map { .nanoseconds($0.nanoseconds) },
                lastSuccessTime: probe.lastSuccessTime,
                lastError: probe.lastError,
                consecutiveFailures: probe.consecutiveFailures
            )
        }
        return ReadinessReport(draining: draining, routes: entries)
    }

    /// The `/readyz` body as text: `ready`, or `not ready` and one line per failing route.
    package var text: String {
        if self.isReady { return "ready\n" }
        var lines = ["not ready"]
        if self.draining { lines.append("draining: the gateway is shutting down") }
        for route in self.failingRoutes {
            lines.append("route \(route.name): \(route.problem ?? "not ready")")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The `/readyz` body as JSON (`Accept: application/json`).
    package var json: JSONValue {
        .object([
            ("ready", .bool(self.isReady)),
            ("draining", .bool(self.draining)),
            ("failing_routes", .array(self.failingRoutes.map { .string($0.name) })),
            ("routes", .array(self.routes.map(\.json))),
        ])
    }
}

extension ReadinessReport.Route {
    var json: JSONValue {
        .object([
            ("name", .string(self.name)),
            ("upstream", .string(self.upstream)),
            ("ready", .bool(self.ready)),
            ("probed", .bool(self.probed)),
            ("last_success_age_seconds", .int(orNull: self.lastSuccessAge.map { $0.components.seconds })),
            ("last_success", .string(orNull: self.lastSuccessTime?.rfc3339)),
            ("last_error", .string(orNull: self.lastError)),
            ("consecutive_failures", .int(Int64(self.consecutiveFailures))),
        ])
    }
}

/// Short human durations for the status page and readiness messages: `850 ms`, `42 s`,
/// `3 m 05 s`, `2 h 07 m`, `3 d 04 h`.
package enum DurationText {
    package static func short(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 { return "0 s" }
        if seconds == 0 { return "\(attoseconds / 1_000_000_000_000_000) ms" }
        if seconds < 60 { return "\(seconds) s" }
        if seconds < 3600 { return "\(seconds / 60) m \(Self.twoDigits(seconds % 60)) s" }
        if seconds < 86400 { return "\(seconds / 3600) h \(Self.twoDigits(seconds / 60 % 60)) m" }
        return "\(seconds / 86400) d \(Self.twoDigits(seconds / 3600 % 24)) h"
    }

    private static func twoDigits(_ value: Int64) -> String {
        value < 10 ? "0\(value)" : "\(value)"
    }
}
