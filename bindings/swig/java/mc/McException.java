package mc;

/**
 * A failed mc_* call: the mc_status_t it returned ({@link #status()}, one of the MC_ERR_* values
 * of {@link McConstants}) and the library's message (mc_last_error(), read in the same native
 * call, on the same thread, right after the failure). Unchecked, as the calls are many and the
 * handling is usually the same.
 */
public class McException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final int status;

  public McException(int status, String message) {
    super(Mc.mc_status_str(status) + " (" + status + "): " + message);
    this.status = status;
  }

  /** The mc_status_t, e.g. McConstants.MC_ERR_INVALID_ARG (-1). Unknown codes pass through. */
  public int status() { return status; }

  /** The status by name ({@link ErrorCode#Other} for a code this binding does not know). */
  public ErrorCode code() { return ErrorCode.of(status); }

  /** The library's message alone (without the status prefix). */
  public String libraryMessage() {
    String m = getMessage();
    int i = m.indexOf("): ");
    return i < 0 ? m : m.substring(i + 3);
  }
}
