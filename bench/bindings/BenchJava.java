import java.nio.ByteBuffer;
import java.util.Arrays;

import mc.*;

/** The Java row of bench/bindings: one 8-byte WRITE through Mc.mc_transfer (the SWIG binding)
 *  between two engines in this JVM. usage: java BenchJava ITERS WARMUP CHUNKS. */
public class BenchJava {
  static Engine engine(String transports) {
    try (Config cfg = Mc.mc_config_create()) {
      Mc.mc_config_set(cfg, "listen", "127.0.0.1:0");
      Mc.mc_config_set(cfg, "transports", transports);
      return Mc.mc_engine_create(cfg);
    }
  }

  public static void main(String[] args) {
    int iters = Integer.parseInt(args[0]), warmup = Integer.parseInt(args[1]);
    int chunks = Integer.parseInt(args[2]);
    String transports = System.getenv().getOrDefault("BENCH_TRANSPORTS", "shm");
    try (Engine a = engine(transports); Engine b = engine(transports)) {
      ByteBuffer local = ByteBuffer.allocateDirect(4096), target = ByteBuffer.allocateDirect(4096);
      for (int i = 0; i < 8; i++) local.put(i, (byte) 7);
      Mc.mc_buffer_register(a, local, null);
      Mc.mc_buffer_register(b, target, null);
      long seg = Mc.mc_segment_open(a, Mc.mc_engine_name(b));
      long remote = Mc.mc_segment_buffers(a, seg)[0].getAddr();
      System.out.println("transport " + Mc.mc_segment_query(a, seg).getTransport());
      Request[] reqs = {Request.write(local, seg, remote, 8)};
      for (int i = 0; i < warmup; i++) Mc.mc_transfer(a, reqs, -1);
      double[] per = new double[chunks];
      int n = iters / chunks;
      for (int c = 0; c < chunks; c++) {
        long t0 = System.nanoTime();
        for (int i = 0; i < n; i++) Mc.mc_transfer(a, reqs, -1);
        per[c] = (double) (System.nanoTime() - t0) / n;
      }
      if (target.get(0) != 7) throw new AssertionError("data did not arrive");
      Arrays.sort(per);
      System.out.printf("ns_per_op %.1f%n", per[chunks / 2]);
      Mc.mc_segment_close(a, seg);
    }
  }
}
