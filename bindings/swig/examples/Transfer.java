import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.util.Random;

import mc.*;

/**
 * Moves data to a target in another process and reads it back (the Java binding's example).
 *
 *   build/bin/mc_bench target --listen 127.0.0.1:0 --size 64M     # prints "segment: NAME"
 *   bindings/swig/examples/run.sh NAME [MiB]
 *
 * Without NAME it starts that target itself (the mc_bench named by -Dmc.bench, else MC_BENCH, else
 * build/bin/mc_bench) and stops it at the end. Exit status 0 when the data read back matches.
 */
public class Transfer implements McConstants {
  public static void main(String[] args) throws Exception {
    Process target = null;
    String name;
    if (args.length > 0) {
      name = args[0];
    } else {
      String bench = System.getProperty("mc.bench", System.getenv().getOrDefault("MC_BENCH", "build/bin/mc_bench"));
      target = new ProcessBuilder(bench, "target", "--listen", "127.0.0.1:0", "--size", "64M")
                   .redirectError(ProcessBuilder.Redirect.INHERIT).start();
      BufferedReader out = new BufferedReader(new InputStreamReader(target.getInputStream()));
      String line = out.readLine();
      if (line == null || !line.startsWith("segment: ")) {
        target.destroyForcibly();
        System.err.println("Transfer: the target printed " + line);
        System.exit(2);
      }
      name = line.substring("segment: ".length()).trim();
    }
    int mib = args.length > 1 ? Integer.parseInt(args[1]) : 16;
    int rc = 1;
    try (Config cfg = Mc.mc_config_create()) {
      Mc.mc_config_set(cfg, "listen", "127.0.0.1:0");
      try (Engine eng = Mc.mc_engine_create(cfg)) {
        long seg = Mc.mc_segment_open(eng, name);
        BufferInfo remote = Mc.mc_segment_buffers(eng, seg)[0];
        // One direct ByteBuffer holds at most Integer.MAX_VALUE bytes.
        int n = (int) Math.min(Math.min((long) mib << 20, remote.getLength()), Integer.MAX_VALUE);
        ByteBuffer src = ByteBuffer.allocateDirect(n), dst = ByteBuffer.allocateDirect(n);
        byte[] data = new byte[n];
        new Random(42).nextBytes(data);
        src.put(data).clear();
        Mc.mc_buffer_register(eng, src, null);
        Mc.mc_buffer_register(eng, dst, null);
        long t = System.nanoTime();
        Mc.mc_transfer(eng, new Request[] {Request.write(src, seg, remote.getAddr(), n)}, 10000);
        long tWrite = System.nanoTime() - t;
        t = System.nanoTime();
        Mc.mc_transfer(eng, new Request[] {Request.read(dst, seg, remote.getAddr(), n)}, 10000);
        long tRead = System.nanoTime() - t;
        boolean ok = dst.equals(src);
        System.out.printf("Transfer (java): wrote %d bytes to %s in %.1f ms (%.2f GB/s), read back in %.1f ms (%.2f GB/s): %s%n",
                          n, name, tWrite / 1e6, (double) n / tWrite, tRead / 1e6, (double) n / tRead,
                          ok ? "match" : "MISMATCH");
        Mc.mc_segment_close(eng, seg);
        rc = ok ? 0 : 1;
      }
    } finally {
      if (target != null) {
        target.destroyForcibly();
        target.waitFor();
      }
    }
    System.exit(rc);
  }
}
