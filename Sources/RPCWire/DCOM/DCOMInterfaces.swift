/// The DCOM interfaces whose messages this room reads, and their operation numbers.
///
/// DCOM (MS-DCOM) is ORPC over DCE/RPC: activation and OXID resolution run on the endpoint-mapper
/// port (135) through the interfaces below; calls on objects then run on the object exporter's
/// dynamic port, with the interface pointer's IPID as the request header's object UUID.
public enum DCOMInterface {
    /// `IRemoteSCMActivator` (Wireshark and impacket: `ISystemActivator`),
    /// `000001a0-0000-0000-c000-000000000046` v0.0 (MS-DCOM 1.9, 3.1.2.5.2.3).
    public static let remoteSCMActivator = SyntaxID(
        uuid: DCEUUID(high: 0x0000_01a0_0000_0000, low: 0xc000_0000_0000_0046),
        majorVersion: 0,
        minorVersion: 0
    )
    /// `IActivation`, the older activation interface, `4d9f4ab8-7d1c-11cf-861e-0020af6e7c57` v0.0
    /// (MS-DCOM 1.9, 3.1.2.5.2.3.1).
    public static let activation = SyntaxID(
        uuid: DCEUUID(high: 0x4d9f_4ab8_7d1c_11cf, low: 0x861e_0020_af6e_7c57),
        majorVersion: 0,
        minorVersion: 0
    )
    /// `IObjectExporter` (the OXID resolver), `99fcfec4-5260-101b-bbcb-00aa0021347a` v0.0
    /// (MS-DCOM 1.9, 3.1.2.5.1).
    public static let objectExporter = SyntaxID(
        uuid: DCEUUID(high: 0x99fc_fec4_5260_101b, low: 0xbbcb_00aa_0021_347a),
        majorVersion: 0,
        minorVersion: 0
    )

    /// Whether `uuid` is an interface whose requests create objects (activation requests whose
    /// CLSID the policy can check).
    public static func isActivator(_ uuid: DCEUUID) -> Bool {
        uuid == Self.remoteSCMActivator.uuid || uuid == Self.activation.uuid
    }
}

/// Operations of `IRemoteSCMActivator` (MS-DCOM 3.1.2.5.2.3; opnums 0 to 2 are reserved).
public enum RemoteSCMActivatorOperation: UInt16, Hashable, Sendable {
    case remoteGetClassObject = 3
    case remoteCreateInstance = 4
}

/// Operations of `IActivation` (MS-DCOM 3.1.2.5.2.3.1).
public enum ActivationOperation: UInt16, Hashable, Sendable {
    case remoteActivation = 0
}

/// Operations of `IObjectExporter` (MS-DCOM 3.1.2.5.1).
public enum ObjectExporterOperation: UInt16, Hashable, Sendable {
    case resolveOxid = 0
    case simplePing = 1
    case complexPing = 2
    case serverAlive = 3
    case resolveOxid2 = 4
    case serverAlive2 = 5
}

/// Well-known CLSIDs that name the parts of an activation (MS-DCOM 1.9).
public enum DCOMClassID {
    /// `CLSID_ActivationPropertiesIn`, the custom OBJREF class of a request's properties.
    public static let activationPropertiesIn = DCEUUID(high: 0x0000_0338_0000_0000, low: 0xc000_0000_0000_0046)
    /// `CLSID_ActivationPropertiesOut`, the custom OBJREF class of a reply's properties; also
    /// `CLSID_PropsOutInfo`, the property that carries the returned interfaces (same value).
    public static let activationPropertiesOut = DCEUUID(high: 0x0000_0339_0000_0000, low: 0xc000_0000_0000_0046)
    /// `CLSID_InstantiationInfo`: the property naming the class to create (MS-DCOM 2.2.22.2.1).
    public static let instantiationInfo = DCEUUID(high: 0x0000_01ab_0000_0000, low: 0xc000_0000_0000_0046)
    /// `CLSID_ScmReplyInfo`: the property with the OXID and its bindings (MS-DCOM 2.2.22.2.8).
    public static let scmReplyInfo = DCEUUID(high: 0x0000_01b6_0000_0000, low: 0xc000_0000_0000_0046)
    /// `CLSID_PropsOutInfo` (MS-DCOM 2.2.22.2.9).
    public static let propsOutInfo = Self.activationPropertiesOut
}
