package mc;

import java.nio.ByteBuffer;

/**
 * One one-sided transfer (mc_request_t): READ copies [remote, remote+length) of the segment into
 * local; WRITE copies local into it. local is a native address inside memory registered with the
 * engine (Mc.addressOf(buffer) + offset); remote is the peer's address (BufferInfo.getAddr()).
 * A plain value: the binding copies it into a C array for each call.
 */
public final class Request {
  /** Longs per request in the array the native side unpacks. */
  static final int LONGS = 5;

  public int opcode;      // McConstants.MC_READ or MC_WRITE
  public int flags;       // reserved, 0
  public long local;
  public long segment;
  public long remote;
  public long length;

  public Request(int opcode, long local, long segment, long remote, long length) {
    this.opcode = opcode;
    this.local = local;
    this.segment = segment;
    this.remote = remote;
    this.length = length;
  }

  /** WRITE of local's bytes [0, length) to remote. local must be a registered direct buffer. */
  public static Request write(ByteBuffer local, long segment, long remote, long length) {
    return new Request(McConstants.MC_WRITE, Mc.addressOf(local), segment, remote, length);
  }

  /** READ of length bytes at remote into local's bytes [0, length). */
  public static Request read(ByteBuffer local, long segment, long remote, long length) {
    return new Request(McConstants.MC_READ, Mc.addressOf(local), segment, remote, length);
  }

  /**
   * NOTIFY of msg's bytes [0, length) (1..MC_NOTIFY_MAX_BYTES; any direct buffer, copied at
   * submit) to the segment's engine, sent once the batch's earlier requests all COMPLETED.
   */
  public static Request notify(ByteBuffer msg, long segment, long length) {
    return new Request(McConstants.MC_NOTIFY, Mc.addressOf(msg), segment, 0, length);
  }

  /** The layout the JNI wrapper reads: opcode | flags << 32, local, segment, remote, length. */
  static long[] pack(Request[] requests) {
    if (requests == null) throw new McException(McConstants.MC_ERR_INVALID_ARG, "requests is null");
    long[] p = new long[requests.length * LONGS];
    for (int i = 0; i < requests.length; i++) {
      Request r = requests[i];
      if (r == null) throw new McException(McConstants.MC_ERR_INVALID_ARG, "request " + i + " is null");
      int o = i * LONGS;
      p[o] = (r.opcode & 0xffffffffL) | ((long) r.flags << 32);
      p[o + 1] = r.local;
      p[o + 2] = r.segment;
      p[o + 3] = r.remote;
      p[o + 4] = r.length;
    }
    return p;
  }
}
