public import RPCWire

/// A well-known COM class that rules may name in `clsids`: the CLSID an activation request
/// carries (MS-DCOM 2.2.22.2.1 `InstantiationInfoData.classId`).
public struct CatalogClass: Hashable, Sendable {
    public var name: String
    public var classID: DCEUUID
    public var summary: String

    public init(name: String, classID: String, summary: String) {
        // The table below is static and checked by tests; a typo yields the zero UUID, never a trap.
        self.name = name
        self.classID = DCEUUID(classID) ?? .zero
        self.summary = summary
    }
}

/// The built-in catalog of COM classes. CLSIDs are those the public tools activate (impacket
/// `wmiexec.py`/`dcomexec.py`, enigma0x3's DCOM lateral-movement research) and that the Windows
/// captures show in their activation requests.
public enum ClassCatalog {
    public static let all: [CatalogClass] = [
        .init(
            name: "wbemlevel1login",
            classID: "8bc3f05e-d86b-11d0-a075-00c04fb68820",
            summary: "WMI login (CLSID_WbemLevel1Login, MS-WMI 1.9): every remote WMI session starts here"
        ),
        .init(
            name: "mmc20.application",
            classID: "49b2791a-b1ae-4c90-9b8e-e860ba07f889",
            summary: "MMC 2.0 application; Document.ActiveView.ExecuteShellCommand runs a command"
        ),
        .init(
            name: "shellwindows",
            classID: "9ba05972-f6a8-11cf-a442-00a0c90a8f39",
            summary: "Shell windows collection; Item().Document.Application.ShellExecute runs a command"
        ),
        .init(
            name: "shellbrowserwindow",
            classID: "c08afd90-f2a1-11d1-8455-00a0c91f3880",
            summary: "Shell browser window; Document.Application.ShellExecute runs a command"
        ),
        .init(
            name: "excel.application",
            classID: "00024500-0000-0000-c000-000000000046",
            summary: "Excel; RegisterXLL and ExecuteExcel4Macro load code"
        ),
        .init(
            name: "internetexplorer.application",
            classID: "0002df01-0000-0000-c000-000000000046",
            summary: "Internet Explorer; abused for DLL hijacking (iertutil.dll)"
        ),
    ]

    private static let byName: [String: CatalogClass] = Dictionary(
        all.map { ($0.name, $0) },
        uniquingKeysWith: { first, _ in first }
    )

    /// The entry for a catalog name (case-insensitive).
    public static func named(_ name: String) -> CatalogClass? {
        byName[name.lowercased()]
    }

    /// The catalog name of a CLSID, for audit lines.
    public static func name(of classID: DCEUUID) -> String? {
        all.first { $0.classID == classID }?.name
    }
}

/// Which COM classes a rule names: a catalog name or a raw CLSID.
public struct ClassIDMatcher: Hashable, Sendable, CustomStringConvertible {
    public var classID: DCEUUID
    /// How the user wrote it, for logs and `explain`.
    public var label: String

    public init(classID: DCEUUID, label: String) {
        self.classID = classID
        self.label = label
    }

    /// Parses a catalog name or a CLSID (with or without braces). `nil` when it is neither.
    public init?(parsing text: String) {
        if let entry = ClassCatalog.named(text) {
            self.init(classID: entry.classID, label: entry.name)
            return
        }
        var bare = Substring(text)
        if bare.first == "{", bare.last == "}" {
            bare = bare.dropFirst().dropLast()
        }
        guard let uuid = DCEUUID(bare) else { return nil }
        self.init(classID: uuid, label: text)
    }

    public var description: String { self.label }
}

/// What the policy knows of the class an activation request creates.
public enum ActivationClass: Hashable, Sendable, CustomStringConvertible {
    /// The request was readable (auth level below privacy) and names this CLSID.
    case known(DCEUUID)
    /// The request was sealed (privacy): the CLSID cannot be read.
    case sealed
    /// The request was not sealed but could not be read: split into fragments, or not understood.
    /// Rules treat it as sealed.
    case unreadable

    public var description: String {
        switch self {
        case .known(let classID): return ClassCatalog.name(of: classID) ?? "\(classID)"
        case .sealed: return "sealed"
        case .unreadable: return "unreadable"
        }
    }
}
