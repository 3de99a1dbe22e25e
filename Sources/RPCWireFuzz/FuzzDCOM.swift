import NIOCore
import RPCWire

/// DCOM paths (MS-DCOM 2.2): the input, and the stub of every request and response PDU, parsed as
/// each activation request and reply, ResolveOxid request and replies, ServerAlive2 reply and
/// ORPCTHIS/ORPCTHAT prefix, in NDR32 and NDR64, and as an OBJREF.
///
/// Invariants checked by trapping: a parser that succeeds consumed the whole stub; every string
/// binding it returns lies within the DUALSTRINGARRAY limit; every announced port is non-zero and
/// named by a TCP binding; nothing returned exceeds the activation limits.
func fuzzDCOM(input: ByteBuffer, pdus: [PDU], limits: WireLimits) {
    var stubs = [input]
    for pdu in pdus {
        switch pdu.body {
        case .request(let request): stubs.append(request.stub)
        case .response(let response): stubs.append(response.stub)
        default: continue
        }
    }
    for stub in stubs {
        for syntax in [NDRSyntax.ndr32, .ndr64] {
            fuzzDCOMStub(stub, syntax: syntax, limits: limits)
        }
        var objref = stub
        if let reference = try? objref.readObjectReference(limits: limits) {
            checkBindings(reference.resolverAddress, limits: limits)
        }
    }
}

private func fuzzDCOMStub(_ stub: ByteBuffer, syntax: NDRSyntax, limits: WireLimits) {
    for operation in [ActivationRequest.Operation.remoteCreateInstance, .remoteGetClassObject, .remoteActivation] {
        var request = stub
        if let parsed = try? request.readActivationRequest(operation, syntax: syntax, limits: limits) {
            guard request.readableBytes == 0, parsed.requestedInterfaces.count <= limits.maximumActivationEntries else {
                fatalError("activation request left \(request.readableBytes) bytes or too many interfaces")
            }
        }
        var reply = stub
        if let parsed = try? reply.readActivationReply(operation, syntax: syntax, limits: limits) {
            guard reply.readableBytes == 0, parsed.interfaces.count <= limits.maximumActivationEntries else {
                fatalError("activation reply left \(reply.readableBytes) bytes or too many interfaces")
            }
            checkBindings(parsed.exporter?.bindings, limits: limits)
            for interface in parsed.interfaces {
                checkBindings(interface.reference?.resolverAddress, limits: limits)
            }
            guard parsed.announcedPorts.allSatisfy({ $0 != 0 }) else { fatalError("port 0 announced") }
        }
    }
    for withVersion in [false, true] {
        var reply = stub
        if let parsed = try? reply.readResolveOxidReply(withVersion: withVersion, syntax: syntax, limits: limits) {
            guard reply.readableBytes == 0 else { fatalError("ResolveOxid reply left bytes") }
            checkBindings(parsed.bindings, limits: limits)
        }
    }
    var request = stub
    if (try? request.readResolveOxidRequest(syntax: syntax, limits: limits)) != nil, request.readableBytes != 0 {
        fatalError("ResolveOxid request left bytes")
    }
    var alive = stub
    if let parsed = try? alive.readServerAlive2Reply(syntax: syntax, limits: limits) {
        guard alive.readableBytes == 0 else { fatalError("ServerAlive2 reply left bytes") }
        checkBindings(parsed.bindings, limits: limits)
    }
    var this = stub
    if let parsed = try? this.readORPCThis(syntax: syntax, limits: limits),
        parsed.extensions.count > limits.maximumORPCExtents
    {
        fatalError("ORPCTHIS with \(parsed.extensions.count) extensions")
    }
    var that = stub
    if let parsed = try? that.readORPCThat(syntax: syntax, limits: limits),
        parsed.extensions.count > limits.maximumORPCExtents
    {
        fatalError("ORPCTHAT with \(parsed.extensions.count) extensions")
    }
}

private func checkBindings(_ bindings: DualStringArray?, limits: WireLimits) {
    guard let bindings else { return }
    let units =
        bindings.stringBindings.reduce(0) { $0 + 2 + $1.networkAddress.utf16.count }
        + bindings.securityBindings.reduce(0) { $0 + 3 + $1.principalName.utf16.count }
    guard units <= limits.maximumDualStringArrayEntries else {
        fatalError("bindings of \(units) units over the limit")
    }
    for binding in bindings.stringBindings {
        if let port = binding.port, port == 0 || binding.towerID != StringBinding.tcpTowerID {
            fatalError("port \(port) from \(binding)")
        }
    }
}
