import NIOEmbedded
import Testing

@testable import RPCGateway

@Suite("Admission")
struct AdmissionTests {
    @Test("Global and per-route caps; every ticket released once frees its place")
    func caps() {
        let admission = Admission(ids: ConnectionIDs())
        let first = admission.admit(route: "a", routeLimit: 2, globalLimit: 3)
        let second = admission.admit(route: "a", routeLimit: 2, globalLimit: 3)
        #expect(first != nil && second != nil)
        #expect(admission.admit(route: "a", routeLimit: 2, globalLimit: 3) == nil, "route cap")
        let third = admission.admit(route: "b", routeLimit: 2, globalLimit: 3)
        #expect(third != nil)
        #expect(admission.admit(route: "b", routeLimit: 2, globalLimit: 3) == nil, "global cap")
        #expect(admission.active == 3)
        #expect(admission.activeByRoute == ["a": 2, "b": 1])
        if let first { admission.release(first) }
        #expect(admission.admit(route: "a", routeLimit: 2, globalLimit: 3) != nil)
    }

    @Test("Ids are unique across admissions that share a source")
    func ids() {
        let ids = ConnectionIDs()
        let gateway = Admission(ids: ids)
        let core = Admission(ids: ids)
        let a = gateway.admit(route: "r", routeLimit: 10, globalLimit: 10)
        let b = core.admit(route: "core", routeLimit: 10, globalLimit: 10)
        #expect(a?.id != b?.id)
    }

    @Test("Draining refuses new connections and hands back the open ones")
    func draining() {
        let admission = Admission(ids: ConnectionIDs())
        #expect(admission.admit(route: "r", routeLimit: 10, globalLimit: 10) != nil)
        #expect(admission.beginDraining().isEmpty, "nothing registered")
        #expect(admission.isDraining)
        #expect(admission.admit(route: "r", routeLimit: 10, globalLimit: 10) == nil)
    }
}
