public import NIOCore

/// The verification trailer (MS-RPCE 2.2.2.13, `rpc_sec_verification_trailer`): a client whose
/// request is protected at packet integrity or above may append it to the stub data, after the
/// NDR-encoded arguments and before the auth padding, 4-byte aligned relative to the stub start.
/// Its commands (bitmask, presentation context, header2) bind the call to its context; it is not
/// part of the operation's NDR. Windows adds it to signed endpoint-mapper requests (captured from
/// mimikatz on Windows 10: an `ept_map` followed by a `SEC_VT_COMMAND_PCONTEXT`).
public enum VerificationTrailer {
    /// `SEC_VT_SIGNATURE`: the 8 bytes that start the trailer.
    public static let signature: [UInt8] = [0x8A, 0xE3, 0x13, 0x71, 0x02, 0xF4, 0x36, 0x71]

    /// Whether the bytes of `buffer` from its reader index are a verification trailer, once
    /// aligned to 4 relative to the stub start (`offset` bytes before the reader index): zero
    /// padding, then the signature. The commands after it are not inspected.
    public static func follows(in buffer: ByteBuffer, offset: Int) -> Bool {
        let pad = (4 - offset % 4) % 4
        guard buffer.readableBytes >= pad + Self.signature.count,
            let bytes = buffer.getBytes(at: buffer.readerIndex, length: pad + Self.signature.count)
        else { return false }
        return bytes.prefix(pad).allSatisfy { $0 == 0 } && Array(bytes.dropFirst(pad)) == Self.signature
    }
}
