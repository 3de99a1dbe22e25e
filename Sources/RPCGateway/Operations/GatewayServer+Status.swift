import NIOConcurrencyHelpers
package import NIOCore
import RPCPolicy
import RPCWire

/// Operations: every route's upstream endpoint mapper is probed (a TCP connect) on the schedule
/// of ``ReadinessSettings``, for ``GatewayServer/readiness(now:)`` (`/readyz`) and
/// `rpcgate_upstream_up`; with the routes, mappings, open connections and refused binds and
/// calls, that makes up ``GatewayServer/status(version:)`` (the status page).
extension GatewayServer {
    /// Probes every route's upstream (skipping routes whose last probe is still running).
    func probeUpstreams() {
        let routes = self.state.withLockedValue { Array($0.routes.values) }
        for route in routes { self.probe(route) }
    }

    /// What `route` depends on: its upstream endpoint mapper, or, with `via`, the core gateway it
    /// tunnels to (the server is reached from there). `nil` for a transparent route: its servers
    /// differ per connection.
    func probeTarget(_ route: RouteRuntime) -> ProbeTarget? {
        if case .transparent = route.identity.mode { return nil }
        guard let via = route.settings.via else { return ProbeTarget(upstream: route.upstreamEndpointMapper) }
        let peer = self.state.withLockedValue { $0.peers[via]?.settings }
        return ProbeTarget(host: peer?.host ?? via, port: peer?.port ?? 0, what: "core gateway \(via)", peer: via)
    }

    func probe(_ route: RouteRuntime) {
        guard let target = self.probeTarget(route), route.beginProbe() else { return }
        UpstreamProbe.connect(
            to: target,
            timeout: self.readinessSettings.timeout,
            on: self.group.next()
        ).whenComplete { result in
            switch result {
            case .success: route.probeSucceeded(target)
            case .failure(let error): route.probeFailed(target, error: UpstreamProbe.describe(error))
            }
        }
    }

    /// `/readyz`: every route's upstream reached within ``ReadinessSettings/maximumAge``, and not
    /// draining.
    package func readiness(now: NIODeadline = .now()) -> ReadinessReport {
        let routes = self.state.withLockedValue { state in state.settings.routes.compactMap { state.routes[$0.name] } }
        let draining = self.admission.isDraining
        return ReadinessReport.evaluate(
            routes: routes.map { route in
                let target = self.probeTarget(route)
                return (route.name, target.map { "\($0)" } ?? "-", target == nil ? nil : route.probe)
            },
            draining: draining,
            now: now,
            maximumAge: self.readinessSettings.maximumAge
        )
    }

    /// A snapshot for the status page. Connections are read on their own event loops, so call
    /// this off the event loops (the admin server does, from a task).
    package func status(version: String) async -> GatewayStatus {
        let now = NIODeadline.now()
        let (settings, routes) = self.state.withLockedValue { state in
            (state.settings, state.settings.routes.compactMap { state.routes[$0.name] })
        }
        let activeByRoute = self.admission.activeByRoute
        let connections = self.admission.spliceOrder()
        let active = self.admission.active
        let draining = self.admission.isDraining
        let awaitingBind = self.admission.awaitingBind
        let readiness = self.readiness(now: now)
        let routeStatus = routes.map { route -> RouteStatus in
            let current = route.settings
            var servers: [String] = []
            if case .transparent(let networks) = current.mode { servers = networks.map(\.description) }
            return RouteStatus(
                name: route.name,
                mode: current.mode.name,
                servers: servers,
                listenAddress: current.listenAddress,
                epmPort: current.epmPort,
                ports: current.ports,
                advertiseAddress: current.advertiseAddress,
                upstreamHost: current.upstreamHost,
                upstreamAddress: route.upstreamAddress,
                upstreamEPMPort: current.upstreamEPMPort,
                via: current.via,
                policyName: current.policy.name,
                policyDefault: current.policy.defaultAction,
                ruleCount: current.policy.rules.count,
                activeConnections: activeByRoute[route.name, default: 0],
                maximumConnections: current.maximumConnections,
                mappingIdleTimeout: .nanoseconds(route.pool.idleTimeout.nanoseconds),
                mappings: route.pool.mappings.map { MappingStatus($0, now: now, idleTimeout: route.pool.idleTimeout) },
                readiness: readiness.routes.first { $0.name == route.name }
                    ?? ReadinessReport.Route(
                        name: route.name,
                        upstream: self.probeTarget(route).map { "\($0)" } ?? "-",
                        ready: false,
                        lastSuccessAge: nil,
                        lastError: nil,
                        consecutiveFailures: 0
                    )
            )
        }
        let listed = connections.prefix(Self.statusConnectionLimit)
        var snapshots: [ConnectionStatus] = []
        snapshots.reserveCapacity(listed.count)
        for connection in listed {
            if let snapshot = try? await connection.eventLoop.submit({ connection.value.snapshot(now: now) }).get() {
                snapshots.append(snapshot)
            }
        }
        let denials = self.denials.snapshot
        return GatewayStatus(
            version: version,
            generatedAt: .now(),
            startedAt: self.startedWallClock,
            uptime: .nanoseconds((now - self.startedAt).nanoseconds),
            draining: draining,
            activeConnections: active,
            maximumConnections: settings.limits.maximumConnections,
            routes: routeStatus,
            connections: snapshots,
            connectionsOmitted: max(0, active - snapshots.count - awaitingBind),
            connectionsAwaitingBind: awaitingBind,
            denials: denials.denials,
            denialsTotal: denials.total,
            readiness: readiness,
            traffic: self.denials.traffic.snapshot
        )
    }

}
