public import RPCWire

/// An operation a built-in profile names: its opnum and its name in the specification.
public struct ProfileOperation: Hashable, Sendable, CustomStringConvertible {
    public var opnum: UInt16
    public var name: String

    public init(_ opnum: UInt16, _ name: String) {
        self.opnum = opnum
        self.name = name
    }

    public var description: String { "\(self.opnum) \(self.name)" }
}

/// A MITRE ATT&CK technique (https://attack.mitre.org), for audit lines a profile decided.
public struct AttackTechnique: Hashable, Sendable, CustomStringConvertible {
    /// `T1003.006`: a technique, or a sub-technique after the dot.
    public var id: String
    /// `OS Credential Dumping: DCSync`.
    public var name: String

    public init(_ id: String, _ name: String) {
        self.id = id
        self.name = name
    }

    /// The technique of a sub-technique (`T1003` for `T1003.006`), or `id` itself.
    public var parentID: String { self.id.split(separator: ".").first.map(String.init) ?? self.id }
    public var isSubtechnique: Bool { self.id.contains(".") }

    public var description: String { "\(self.id) \(self.name)" }

    public static let dcsync = AttackTechnique("T1003.006", "OS Credential Dumping: DCSync")
    public static let forcedAuthentication = AttackTechnique("T1187", "Forced Authentication")
    public static let serviceExecution = AttackTechnique("T1569.002", "System Services: Service Execution")
    public static let windowsService = AttackTechnique("T1543.003", "Create or Modify System Process: Windows Service")
    public static let at = AttackTechnique("T1053.002", "Scheduled Task/Job: At")
    public static let scheduledTask = AttackTechnique("T1053.005", "Scheduled Task/Job: Scheduled Task")
    public static let windowsManagementInstrumentation = AttackTechnique("T1047", "Windows Management Instrumentation")
    public static let distributedComponentObjectModel = AttackTechnique(
        "T1021.003",
        "Remote Services: Distributed Component Object Model"
    )
}

/// One deny rule of a built-in profile, as data.
public struct ProfileRule: Hashable, Sendable {
    /// Catalog names (``InterfaceCatalog``) of the interfaces the rule covers.
    public var interfaces: [String]
    /// The operations refused. `nil` refuses the interface outright, bind included, unless
    /// ``classes`` is set.
    public var operations: [ProfileOperation]?
    /// Class catalog names (``ClassCatalog``): the rule refuses only activation requests that
    /// create one of these classes (sealed ones get ``PolicyRule/defaultSealedActivation``).
    public var classes: [String]?
    /// Where the interface and its operation numbers are specified.
    public var specification: String
    /// What the operations are abused for.
    public var reason: String
    /// The ATT&CK techniques the refused operations serve; audit lines of decisions by this rule
    /// carry them.
    public var techniques: [AttackTechnique]

    public init(
        interfaces: [String],
        operations: [ProfileOperation]?,
        specification: String,
        reason: String,
        techniques: [AttackTechnique] = [],
        classes: [String]? = nil
    ) {
        self.interfaces = interfaces
        self.operations = operations
        self.classes = classes
        self.specification = specification
        self.reason = reason
        self.techniques = techniques
    }

    /// The operations as an ``OpnumSet``, consecutive opnums merged into ranges.
    public var opnumSet: OpnumSet? {
        guard let operations = self.operations else { return nil }
        var ranges: [ClosedRange<UInt16>] = []
        for opnum in Set(operations.map(\.opnum)).sorted() {
            if let last = ranges.last, last.upperBound < UInt16.max, last.upperBound + 1 == opnum {
                ranges[ranges.count - 1] = last.lowerBound...opnum
            } else {
                ranges.append(opnum...opnum)
            }
        }
        return OpnumSet(ranges)
    }
}

/// A named bundle of deny rules that a policy includes with `- profile: NAME`.
public struct PolicyProfile: Hashable, Sendable {
    public var name: String
    public var summary: String
    public var rules: [ProfileRule]

    public init(name: String, summary: String, rules: [ProfileRule]) {
        self.name = name
        self.summary = summary
        self.rules = rules
    }

    /// The profile as policy rules standing at position `index` of a rule list: one deny rule per
    /// ``ProfileRule``, each with `RuleOrigin(index: index, profile: name)`. `exceptSources` applies
    /// to every rule (clients in those networks are not refused by the profile).
    public func expand(at index: Int, exceptSources: [IPNetwork] = []) -> [PolicyRule] {
        self.rules.map { rule in
            PolicyRule(
                action: .deny,
                interfaces: rule.interfaces.compactMap(Self.matcher(named:)),
                opnums: rule.opnumSet,
                exceptSources: exceptSources,
                classIDs: rule.classes.map { $0.compactMap(ClassIDMatcher.init(parsing:)) },
                origin: RuleOrigin(index: index, profile: self.name)
            )
        }
    }

    /// The profile rule and operation that cover a call, for `explain`; `opnum` `nil` looks for
    /// a rule that refuses the whole interface.
    public func entry(for interface: SyntaxID, opnum: UInt16?) -> (rule: ProfileRule, operation: ProfileOperation?)? {
        for rule in self.rules {
            let covers = rule.interfaces.contains { Self.matcher(named: $0)?.matches(interface) == true }
            guard covers else { continue }
            if rule.classes != nil {
                // Decides activation calls only, never the bind.
                if opnum != nil, rule.operations == nil { return (rule, nil) }
                continue
            }
            guard let operations = rule.operations else { return (rule, nil) }
            if let opnum, let operation = operations.first(where: { $0.opnum == opnum }) { return (rule, operation) }
        }
        return nil
    }

    /// A catalog name as a matcher: UUID and major version, as a rule naming it would match.
    private static func matcher(named name: String) -> InterfaceMatcher? {
        guard let entry = InterfaceCatalog.named(name) else { return nil }
        return InterfaceMatcher(uuid: entry.syntax.uuid, majorVersion: entry.syntax.majorVersion, label: entry.name)
    }
}

/// The built-in profiles.
///
/// Every opnum here was checked against at least two public sources: the Microsoft open
/// specification named in ``ProfileRule/specification`` and an implementation (Samba's
/// `librpc/idl`, whose operations are numbered by position, impacket, or the MIDL output of the
/// specification's IDL). `docs/POLICY.md` lists the sources per interface.
public enum BuiltInProfiles {
    public static let all: [PolicyProfile] = [blockCoercion, blockDCSync, blockRemoteExec]

    /// The ATT&CK techniques of the profile rule that decided a bind (`opnum` `nil`) or a call
    /// on `interface`; empty when `profile` is not built in or no rule of it covers the query.
    public static func techniques(profile: String, interface: SyntaxID, opnum: UInt16?) -> [AttackTechnique] {
        self.named(profile)?.entry(for: interface, opnum: opnum)?.rule.techniques ?? []
    }

    /// Profile names, in the order of ``all``.
    public static var names: [String] { self.all.map(\.name) }

    /// The profile called `name` (case-insensitive).
    public static func named(_ name: String) -> PolicyProfile? {
        let lowered = name.lowercased()
        return self.all.first { $0.name == lowered }
    }

    // MARK: - block-coercion

    /// Calls that make the server open a client-chosen UNC path or call a client-named host back,
    /// authenticating as the machine account (relayable to LDAP or AD CS), and printer-driver
    /// installation (PrintNightmare).
    public static let blockCoercion = PolicyProfile(
        name: "block-coercion",
        summary:
            "Authentication coercion (PetitPotam, PrinterBug, DFSCoerce, ShadowCoerce, EventLog) and printer-driver installation",
        rules: [
            ProfileRule(
                interfaces: ["efsrpc", "lsarpc-efs"],
                operations: [
                    ProfileOperation(0, "EfsRpcOpenFileRaw"),
                    ProfileOperation(4, "EfsRpcEncryptFileSrv"),
                    ProfileOperation(5, "EfsRpcDecryptFileSrv"),
                    ProfileOperation(6, "EfsRpcQueryUsersOnFile"),
                    ProfileOperation(7, "EfsRpcQueryRecoveryAgents"),
                    ProfileOperation(8, "EfsRpcRemoveUsersFromFile"),
                    ProfileOperation(9, "EfsRpcAddUsersToFile"),
                    ProfileOperation(11, "EfsRpcNotSupported"),
                    ProfileOperation(12, "EfsRpcFileKeyInfo"),
                    ProfileOperation(13, "EfsRpcDuplicateEncryptionInfoFile"),
                    ProfileOperation(15, "EfsRpcAddUsersToFileEx"),
                    ProfileOperation(16, "EfsRpcFileKeyInfoEx"),
                    ProfileOperation(18, "EfsRpcGetEncryptedFileMetadata"),
                    ProfileOperation(19, "EfsRpcSetEncryptedFileMetadata"),
                    ProfileOperation(21, "EfsRpcEncryptFileExSrv"),
                    ProfileOperation(22, "EfsRpcQueryProtectors"),
                ],
                specification: "MS-EFSR 3.1.4.2",
                reason:
                    "PetitPotam: every operation that takes a file path (EfsRpcNotSupported may be processed as EfsRpcDuplicateEncryptionInfoFile)",
                techniques: [.forcedAuthentication]
            ),
            ProfileRule(
                interfaces: ["spoolss"],
                operations: [
                    ProfileOperation(9, "RpcAddPrinterDriver"),
                    ProfileOperation(62, "RpcRemoteFindFirstPrinterChangeNotification"),
                    ProfileOperation(65, "RpcRemoteFindFirstPrinterChangeNotificationEx"),
                    ProfileOperation(89, "RpcAddPrinterDriverEx"),
                ],
                specification: "MS-RPRN 3.1.4",
                reason:
                    "PrinterBug (the spooler calls a client-named host back) and PrintNightmare (driver installation)",
                techniques: [.forcedAuthentication]
            ),
            ProfileRule(
                interfaces: ["par"],
                operations: [ProfileOperation(39, "RpcAsyncAddPrinterDriver")],
                specification: "MS-PAR 3.1.4",
                reason: "PrintNightmare over the asynchronous print interface",
                techniques: [.forcedAuthentication]
            ),
            ProfileRule(
                interfaces: ["dfsnm"],
                operations: [
                    ProfileOperation(10, "NetrDfsAddFtRoot"),
                    ProfileOperation(11, "NetrDfsRemoveFtRoot"),
                    ProfileOperation(12, "NetrDfsAddStdRoot"),
                    ProfileOperation(13, "NetrDfsRemoveStdRoot"),
                    ProfileOperation(15, "NetrDfsAddStdRootForced"),
                    ProfileOperation(23, "NetrDfsAddRootTarget"),
                    ProfileOperation(24, "NetrDfsRemoveRootTarget"),
                ],
                specification: "MS-DFSNM 3.1.4",
                reason: "DFSCoerce: namespace-root management contacts a client-named server",
                techniques: [.forcedAuthentication]
            ),
            ProfileRule(
                interfaces: ["fsrvp"],
                operations: [
                    ProfileOperation(8, "IsPathSupported"),
                    ProfileOperation(9, "IsPathShadowCopied"),
                ],
                specification: "MS-FSRVP 3.1.4",
                reason: "ShadowCoerce: the VSS agent opens a client-named share",
                techniques: [.forcedAuthentication]
            ),
            ProfileRule(
                interfaces: ["eventlog"],
                operations: [
                    ProfileOperation(9, "ElfrOpenBELW"),
                    ProfileOperation(16, "ElfrOpenBELA"),
                ],
                specification: "MS-EVEN 3.1.4",
                reason: "opening a backup event log on a client-named UNC path",
                techniques: [.forcedAuthentication]
            ),
        ]
    )

    // MARK: - block-dcsync

    /// Directory replication calls, which hand out password hashes (DCSync). List the other
    /// domain controllers under `except_sources`.
    public static let blockDCSync = PolicyProfile(
        name: "block-dcsync",
        summary: "Directory replication (DCSync) except from the sources listed under except_sources",
        rules: [
            ProfileRule(
                interfaces: ["drsuapi"],
                operations: [
                    ProfileOperation(2, "IDL_DRSReplicaSync"),
                    ProfileOperation(3, "IDL_DRSGetNCChanges"),
                ],
                specification: "MS-DRSR 4.1.23, 4.1.10",
                reason: "DCSync: IDL_DRSGetNCChanges replicates secrets; IDL_DRSReplicaSync triggers replication",
                techniques: [.dcsync]
            )
        ]
    )

    // MARK: - block-remote-exec

    /// Remote command execution through the service control manager, the task scheduler, WMI and
    /// DCOM (PsExec, smbexec, SCShell, atexec, wmiexec, dcomexec).
    public static let blockRemoteExec = PolicyProfile(
        name: "block-remote-exec",
        summary:
            "Remote execution: service creation, reconfiguration and start; AT jobs; task registration and run; WMI method execution; DCOM lateral-movement activations",
        rules: [
            ProfileRule(
                interfaces: ["svcctl"],
                operations: [
                    ProfileOperation(11, "RChangeServiceConfigW"),
                    ProfileOperation(12, "RCreateServiceW"),
                    ProfileOperation(19, "RStartServiceW"),
                    ProfileOperation(23, "RChangeServiceConfigA"),
                    ProfileOperation(24, "RCreateServiceA"),
                    ProfileOperation(31, "RStartServiceA"),
                    ProfileOperation(44, "RCreateServiceWOW64A"),
                    ProfileOperation(45, "RCreateServiceWOW64W"),
                    ProfileOperation(60, "RCreateWowService"),
                ],
                specification: "MS-SCMR 3.1.4",
                reason: "creating a service, or changing an existing service's binary path, and starting it",
                techniques: [.serviceExecution, .windowsService]
            ),
            ProfileRule(
                interfaces: ["atsvc"],
                operations: nil,
                specification: "MS-TSCH 3.2.5.2",
                reason: "AT jobs (NetrJobAdd runs a command as SYSTEM)",
                techniques: [.at]
            ),
            ProfileRule(
                interfaces: ["sasec"],
                operations: nil,
                specification: "MS-TSCH 3.2.5.3",
                reason: "setting the credentials of .job tasks",
                techniques: [.scheduledTask]
            ),
            ProfileRule(
                interfaces: ["taskscheduler"],
                operations: [
                    ProfileOperation(1, "SchRpcRegisterTask"),
                    ProfileOperation(12, "SchRpcRun"),
                ],
                specification: "MS-TSCH 3.2.5.4",
                reason: "registering a task and running it on demand",
                techniques: [.scheduledTask]
            ),
            ProfileRule(
                interfaces: ["iwbemservices"],
                operations: [
                    ProfileOperation(24, "ExecMethod"),
                    ProfileOperation(25, "ExecMethodAsync"),
                ],
                specification: "MS-WMI 3.1.4.3",
                reason:
                    "WMI method execution: Win32_Process.Create (wmiexec), Win32_Service.Create; the class and method are in the stub, which is sealed, so every method call is refused",
                techniques: [.windowsManagementInstrumentation]
            ),
            ProfileRule(
                interfaces: ["iremotescmactivator", "iactivation"],
                operations: nil,
                specification: "MS-DCOM 3.1.2.5.2.3, 2.2.22.2.1",
                reason:
                    "DCOM lateral movement (dcomexec): activating MMC20.Application, ShellWindows or ShellBrowserWindow, whose methods run commands; readable activations only",
                techniques: [.distributedComponentObjectModel],
                classes: ["mmc20.application", "shellwindows", "shellbrowserwindow"]
            ),
        ]
    )
}
