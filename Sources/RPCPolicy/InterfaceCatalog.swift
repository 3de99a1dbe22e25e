public import RPCWire

/// A well-known RPC interface: the name users write in rules, its UUID and version, and the
/// specification that defines it.
public struct CatalogInterface: Hashable, Sendable {
    public var name: String
    public var syntax: SyntaxID
    public var specification: String
    public var summary: String

    public init(name: String, uuid: String, major: UInt16, minor: UInt16, specification: String, summary: String) {
        // The table below is static and checked by tests; a typo yields the zero UUID, never a trap.
        self.name = name
        self.syntax = SyntaxID(uuid: DCEUUID(uuid) ?? .zero, majorVersion: major, minorVersion: minor)
        self.specification = specification
        self.summary = summary
    }
}

/// The built-in catalog of interfaces that rules may name.
///
/// UUIDs and versions are those of the interface definitions in the Microsoft open specifications
/// and Samba's `librpc/idl` (checked against a live Samba AD DC for those it serves).
public enum InterfaceCatalog {
    public static let all: [CatalogInterface] = [
        .init(
            name: "epmapper",
            uuid: "e1af8308-5d1f-11c9-91a4-08002b14a0fa",
            major: 3,
            minor: 0,
            specification: "C706 App. O, MS-RPCE",
            summary: "Endpoint mapper"
        ),
        .init(
            name: "mgmt",
            uuid: "afa8bd80-7d8a-11c9-bef4-08002b102989",
            major: 1,
            minor: 0,
            specification: "C706 App. Q",
            summary: "Remote management (interface enumeration)"
        ),
        .init(
            name: "samr",
            uuid: "12345778-1234-abcd-ef00-0123456789ac",
            major: 1,
            minor: 0,
            specification: "MS-SAMR",
            summary: "Security Account Manager"
        ),
        .init(
            name: "lsarpc",
            uuid: "12345778-1234-abcd-ef00-0123456789ab",
            major: 0,
            minor: 0,
            specification: "MS-LSAD, MS-LSAT",
            summary: "Local Security Authority"
        ),
        .init(
            name: "netlogon",
            uuid: "12345678-1234-abcd-ef00-01234567cffb",
            major: 1,
            minor: 0,
            specification: "MS-NRPC",
            summary: "Netlogon"
        ),
        .init(
            name: "dssetup",
            uuid: "3919286a-b10c-11d0-9ba8-00c04fd92ef5",
            major: 0,
            minor: 0,
            specification: "MS-DSSP",
            summary: "Directory services setup"
        ),
        .init(
            name: "drsuapi",
            uuid: "e3514235-4b06-11d1-ab04-00c04fc2dcd2",
            major: 4,
            minor: 0,
            specification: "MS-DRSR",
            summary: "Directory replication (DCSync)"
        ),
        .init(
            name: "backupkey",
            uuid: "3dde7c30-165d-11d1-ab8f-00805f14db40",
            major: 1,
            minor: 0,
            specification: "MS-BKRP",
            summary: "BackupKey (DPAPI)"
        ),
        .init(
            name: "dnsserver",
            uuid: "50abc2a4-574d-40b3-9d66-ee4fd5fba076",
            major: 5,
            minor: 0,
            specification: "MS-DNSP",
            summary: "DNS server management"
        ),
        .init(
            name: "srvsvc",
            uuid: "4b324fc8-1670-01d3-1278-5a47bf6ee188",
            major: 3,
            minor: 0,
            specification: "MS-SRVS",
            summary: "Server service"
        ),
        .init(
            name: "wkssvc",
            uuid: "6bffd098-a112-3610-9833-46c3f87e345a",
            major: 1,
            minor: 0,
            specification: "MS-WKST",
            summary: "Workstation service"
        ),
        .init(
            name: "winreg",
            uuid: "338cd001-2244-31f1-aaaa-900038001003",
            major: 1,
            minor: 0,
            specification: "MS-RRP",
            summary: "Remote registry"
        ),
        .init(
            name: "svcctl",
            uuid: "367abb81-9844-35f1-ad32-98f038001003",
            major: 2,
            minor: 0,
            specification: "MS-SCMR",
            summary: "Service control manager"
        ),
        .init(
            name: "atsvc",
            uuid: "1ff70682-0a51-30e8-076d-740be8cee98b",
            major: 1,
            minor: 0,
            specification: "MS-TSCH",
            summary: "AT scheduler"
        ),
        .init(
            name: "sasec",
            uuid: "378e52b0-c0a9-11cf-822d-00aa0051e40f",
            major: 1,
            minor: 0,
            specification: "MS-TSCH",
            summary: "Task scheduler SASec"
        ),
        .init(
            name: "taskscheduler",
            uuid: "86d35949-83c9-4044-b424-db363231fd0c",
            major: 1,
            minor: 0,
            specification: "MS-TSCH",
            summary: "ITaskSchedulerService"
        ),
        .init(
            name: "spoolss",
            uuid: "12345678-1234-abcd-ef00-0123456789ab",
            major: 1,
            minor: 0,
            specification: "MS-RPRN",
            summary: "Print spooler"
        ),
        .init(
            name: "par",
            uuid: "76f03f96-cdfd-44fc-a22c-64950a001209",
            major: 1,
            minor: 0,
            specification: "MS-PAR",
            summary: "Print system asynchronous remote (IRemoteWinspool)"
        ),
        .init(
            name: "efsrpc",
            uuid: "df1941c5-fe89-4e79-bf10-463657acf44d",
            major: 1,
            minor: 0,
            specification: "MS-EFSR",
            summary: "Encrypting File System (efsrpc endpoint)"
        ),
        .init(
            name: "lsarpc-efs",
            uuid: "c681d488-d850-11d0-8c52-00c04fd90f7e",
            major: 1,
            minor: 0,
            specification: "MS-EFSR",
            summary: "Encrypting File System (lsarpc endpoint)"
        ),
        .init(
            name: "dfsnm",
            uuid: "4fc742e0-4a10-11cf-8273-00aa004ae673",
            major: 3,
            minor: 0,
            specification: "MS-DFSNM",
            summary: "DFS namespace management"
        ),
        // MS-FSRVP 2.1 says "The RPC version number is 3.0", but Samba's server and client,
        // Wireshark's fsrvp.idl and the coercion tools that work against Windows all bind 1.0.
        .init(
            name: "fsrvp",
            uuid: "a8e0653c-2744-4389-a61d-7373df8b2292",
            major: 1,
            minor: 0,
            specification: "MS-FSRVP",
            summary: "File server remote VSS"
        ),
        .init(
            name: "eventlog",
            uuid: "82273fdc-e32a-18c3-3f78-827929dc23ea",
            major: 0,
            minor: 0,
            specification: "MS-EVEN",
            summary: "EventLog remoting"
        ),
        .init(
            name: "even6",
            uuid: "f6beaff7-1e19-4fbb-9f8f-b89e2018337c",
            major: 1,
            minor: 0,
            specification: "MS-EVEN6",
            summary: "EventLog remoting v6"
        ),
        // DCOM and WMI: bound at version 0.0; ORPC calls carry the IPID as the object UUID.
        .init(
            name: "iremotescmactivator",
            uuid: "000001a0-0000-0000-c000-000000000046",
            major: 0,
            minor: 0,
            specification: "MS-DCOM 3.1.2.5.2.3",
            summary: "DCOM activation (RemoteCreateInstance, RemoteGetClassObject)"
        ),
        .init(
            name: "isystemactivator",
            uuid: "000001a0-0000-0000-c000-000000000046",
            major: 0,
            minor: 0,
            specification: "MS-DCOM 3.1.2.5.2.3",
            summary: "DCOM activation (Wireshark and impacket name for IRemoteSCMActivator)"
        ),
        .init(
            name: "iactivation",
            uuid: "4d9f4ab8-7d1c-11cf-861e-0020af6e7c57",
            major: 0,
            minor: 0,
            specification: "MS-DCOM 3.1.2.5.2.3.1",
            summary: "DCOM activation, old style (RemoteActivation)"
        ),
        .init(
            name: "iobjectexporter",
            uuid: "99fcfec4-5260-101b-bbcb-00aa0021347a",
            major: 0,
            minor: 0,
            specification: "MS-DCOM 3.1.2.5.1",
            summary: "DCOM OXID resolver (ResolveOxid2, ServerAlive2, pings)"
        ),
        .init(
            name: "iremunknown",
            uuid: "00000131-0000-0000-c000-000000000046",
            major: 0,
            minor: 0,
            specification: "MS-DCOM 3.1.1.5.6",
            summary: "DCOM remote IUnknown (RemQueryInterface, RemAddRef, RemRelease)"
        ),
        .init(
            name: "iremunknown2",
            uuid: "00000143-0000-0000-c000-000000000046",
            major: 0,
            minor: 0,
            specification: "MS-DCOM 3.1.1.5.7",
            summary: "DCOM remote IUnknown, version 2 (RemQueryInterface2)"
        ),
        .init(
            name: "iwbemlevel1login",
            uuid: "f309ad18-d86a-11d0-a075-00c04fb68820",
            major: 0,
            minor: 0,
            specification: "MS-WMI 3.1.4.1",
            summary: "WMI login (NTLMLogin)"
        ),
        .init(
            name: "iwbemservices",
            uuid: "9556dc99-828c-11cf-a37e-00aa003240c7",
            major: 0,
            minor: 0,
            specification: "MS-WMI 3.1.4.3",
            summary: "WMI services (queries, GetObject, ExecMethod)"
        ),
        .init(
            name: "ienumwbemclassobject",
            uuid: "027947e1-d731-11ce-a357-000000000001",
            major: 0,
            minor: 0,
            specification: "MS-WMI 3.1.4.4",
            summary: "WMI result enumeration"
        ),
        .init(
            name: "iwbemcallresult",
            uuid: "44aca675-e8fc-11d0-a07c-00c04fb68820",
            major: 0,
            minor: 0,
            specification: "MS-WMI 3.1.4.7",
            summary: "WMI semisynchronous call result"
        ),
        .init(
            name: "iwbemfetchsmartenum",
            uuid: "1c1c45ee-4395-11d2-b60b-00104b703efd",
            major: 0,
            minor: 0,
            specification: "MS-WMI 3.1.4.5",
            summary: "WMI smart enumerator"
        ),
        .init(
            name: "idispatch",
            uuid: "00020400-0000-0000-c000-000000000046",
            major: 0,
            minor: 0,
            specification: "MS-OAUT 3.1.4",
            summary: "OLE Automation IDispatch (Invoke: what dcomexec's objects are driven by)"
        ),
    ]

    private static let byName: [String: CatalogInterface] = Dictionary(
        all.map { ($0.name, $0) },
        uniquingKeysWith: { first, _ in first }
    )

    /// The entry for a catalog name (case-insensitive).
    public static func named(_ name: String) -> CatalogInterface? {
        byName[name.lowercased()]
    }

    /// The catalog name of an interface the client bound to: UUID and major version must match.
    public static func name(of syntax: SyntaxID) -> String? {
        all.first { $0.syntax.uuid == syntax.uuid && $0.syntax.majorVersion == syntax.majorVersion }?.name
    }
}
