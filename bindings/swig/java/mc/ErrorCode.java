package mc;

/**
 * The mc_status_t error codes by name, as in the other bindings: the C code after MC_ERR_ in
 * CamelCase (MC_ERR_INVALID_ARG is InvalidArg, MC_ERR_TIMEOUT is Timeout). {@link #Other} stands
 * for a code this binding does not know (a newer library).
 */
public enum ErrorCode {
  InvalidArg(McConstants.MC_ERR_INVALID_ARG),
  NoMemory(McConstants.MC_ERR_NO_MEMORY),
  NotFound(McConstants.MC_ERR_NOT_FOUND),
  OutOfRange(McConstants.MC_ERR_OUT_OF_RANGE),
  Exists(McConstants.MC_ERR_EXISTS),
  Busy(McConstants.MC_ERR_BUSY),
  Timeout(McConstants.MC_ERR_TIMEOUT),
  PeerDown(McConstants.MC_ERR_PEER_DOWN),
  Transport(McConstants.MC_ERR_TRANSPORT),
  Unsupported(McConstants.MC_ERR_UNSUPPORTED),
  Metadata(McConstants.MC_ERR_METADATA),
  Internal(McConstants.MC_ERR_INTERNAL),
  BufferTooSmall(McConstants.MC_ERR_BUFFER_TOO_SMALL),
  Canceled(McConstants.MC_ERR_CANCELED),
  Denied(McConstants.MC_ERR_DENIED),
  Other(0);

  private final int status;

  ErrorCode(int status) { this.status = status; }

  /** The mc_status_t value (0 for Other). */
  public int status() { return status; }

  /** The code of a status; Other for one not listed here. */
  public static ErrorCode of(int status) {
    for (ErrorCode c : values()) {
      if (c != Other && c.status == status) return c;
    }
    return Other;
  }
}
