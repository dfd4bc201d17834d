import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import mc.*;

/**
 * The Java (SWIG) binding's tests: plain java, no framework. Each case runs in check(); the last
 * line is "java: N passed, M failed" and the exit status is 1 when any failed.
 */
public class McTest implements McConstants {
  static int passed = 0, failed = 0;

  interface Case { void run() throws Exception; }

  static void check(String name, Case c) {
    try {
      c.run();
      passed++;
      System.out.println("ok   " + name);
    } catch (Throwable t) {
      failed++;
      System.out.println("FAIL " + name + ": " + t);
      t.printStackTrace(System.out);
    }
  }

  static void expect(boolean cond, String what) {
    if (!cond) throw new AssertionError(what);
  }

  static void expectEq(long want, long got, String what) {
    if (want != got) throw new AssertionError(what + ": want " + want + ", got " + got);
  }

  /** Runs c, which must throw McException with status want; returns it. */
  static McException expectStatus(int want, Case c) throws Exception {
    try {
      c.run();
    } catch (McException e) {
      expectEq(want, e.status(), "status of " + e.getMessage());
      expect(!e.libraryMessage().isEmpty(), "a message for status " + want);
      return e;
    }
    throw new AssertionError("no McException (want status " + want + ")");
  }

  static Engine engine(String... kv) {
    try (Config cfg = Mc.mc_config_create()) {
      Mc.mc_config_set(cfg, "listen", "127.0.0.1:0");
      Mc.mc_config_set(cfg, "workers", "2");
      Mc.mc_config_set(cfg, "timeout_ms", "5000");
      for (int i = 0; i + 1 < kv.length; i += 2) Mc.mc_config_set(cfg, kv[i], kv[i + 1]);
      return Mc.mc_engine_create(cfg);
    }
  }

  static void fill(ByteBuffer b, int seed) {
    for (int i = 0; i < b.capacity(); i++) b.put(i, (byte) (i * 31 + seed));
  }

  static void same(ByteBuffer want, ByteBuffer got, int n, String what) {
    for (int i = 0; i < n; i++)
      if (want.get(i) != got.get(i))
        throw new AssertionError(what + ": byte " + i + " differs: " + want.get(i) + " vs " + got.get(i));
  }

  public static void main(String[] args) throws Exception {
    check("version", () -> {
      long v = Mc.mc_version();
      expectEq(MC_VERSION_MAJOR, v >> 16, "major");
      expect(Mc.mc_version_string().equals((v >> 16) + "." + ((v >> 8) & 0xff) + "." + (v & 0xff)),
             "version string " + Mc.mc_version_string());
      expect(!Mc.mc_status_str(MC_ERR_PEER_DOWN).isEmpty(), "status text");
      expect(!Mc.mc_status_str(-12345).isEmpty(), "unknown status text");
    });

    check("bad config key -> McException(-1) with the message", () -> {
      try (Config cfg = Mc.mc_config_create()) {
        McException e = expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_config_set(cfg, "no_such_key", "1"));
        expect(e.libraryMessage().contains("no_such_key"), "message names the key: " + e.libraryMessage());
        expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_config_set(cfg, "workers", "0"));
        Mc.mc_config_set(cfg, "workers", "3"); // the config is still usable
      }
      expect(Mc.mc_last_error() != null, "mc_last_error never null");
    });

    check("file segment by name: file:///abs?size=N, one buffer at 0, write and read back", () -> {
      java.io.File f = java.io.File.createTempFile("mc-java-file", ".bin");
      f.delete();
      try (Engine a = engine()) {
        int n = 4096;
        ByteBuffer src = ByteBuffer.allocateDirect(n), back = ByteBuffer.allocateDirect(n);
        fill(src, 5);
        Mc.mc_buffer_register(a, src, null);
        Mc.mc_buffer_register(a, back, null);
        long seg = Mc.mc_segment_open(a, "file://" + f.getAbsolutePath() + "?size=64K");
        BufferInfo[] bufs = Mc.mc_segment_buffers(a, seg);
        expectEq(1, bufs.length, "file segment buffers");
        expectEq(0, bufs[0].getAddr(), "file segment address");
        expectEq(65536, bufs[0].getLength(), "file segment length");
        Mc.mc_transfer(a, new Request[] {Request.write(src, seg, 1000, n)}, 5000);
        Mc.mc_transfer(a, new Request[] {Request.read(back, seg, 1000, n)}, 5000);
        same(src, back, n, "read back from the file");
        expectEq(65536, f.length(), "file size");
        Mc.mc_segment_close(a, seg);
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_segment_open(a, "file://" + f.getAbsolutePath() + "-missing"));
      } finally {
        f.delete();
      }
    });

    check("loopback: register, open by name, write, read back, batch, stats", () -> {
      try (Engine a = engine(); Engine b = engine()) {
        String nameB = Mc.mc_engine_name(b);
        expect(nameB.startsWith("127.0.0.1:"), "p2p name " + nameB);
        int n = 64 * 1024;
        ByteBuffer src = ByteBuffer.allocateDirect(n), back = ByteBuffer.allocateDirect(n);
        ByteBuffer target = ByteBuffer.allocateDirect(n);
        fill(src, 7);
        Mc.mc_buffer_register(a, src, null);
        Mc.mc_buffer_register(a, back, "cpu");
        Mc.mc_buffer_register(b, target, null);

        long seg = Mc.mc_segment_open(a, nameB);
        expect(seg != 0, "segment handle");
        BufferInfo[] bufs = Mc.mc_segment_buffers(a, seg);
        expectEq(1, bufs.length, "peer buffers");
        expectEq(n, bufs[0].getLength(), "peer buffer length");
        expectEq(Mc.addressOf(target), bufs[0].getAddr(), "peer buffer address");
        long remote = bufs[0].getAddr();

        Mc.mc_transfer(a, new Request[] {Request.write(src, seg, remote, n)}, 5000);
        same(src, target, n, "written");
        Mc.mc_transfer(a, new Request[] {Request.read(back, seg, remote, n)}, 5000);
        same(src, back, n, "read back");
        // The helpers, with the default timeout (the engine's own bound) and with one.
        fill(src, 7);
        Mc.write(a, src, seg, remote, n);
        same(src, target, n, "written by Mc.write");
        fill(back, 0);
        Mc.read(a, back, seg, remote, n, 5000);
        same(src, back, n, "read back by Mc.read");
        Mc.mc_transfer(a, new Request[] {Request.read(back, seg, remote, n)});

        // Two requests in a batch: the halves swapped.
        fill(src, 99);
        try (Batch batch = Mc.mc_batch_create(a, 8)) {
          long s = Mc.addressOf(src);
          Mc.mc_batch_submit(batch, new Request[] {
              new Request(MC_WRITE, s, seg, remote + n / 2, n / 2),
              new Request(MC_WRITE, s + n / 2, seg, remote, n / 2)});
          Mc.mc_batch_wait(batch, 5000);
          for (int i = 0; i < 2; i++) {
            RequestStatus st = Mc.mc_batch_status(batch, i);
            expectEq(MC_REQUEST_COMPLETED, st.getState(), "request " + i + " state");
            expectEq(MC_OK, st.getError(), "request " + i + " error");
            expectEq(n / 2, st.getBytes(), "request " + i + " bytes");
          }
          expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_batch_status(batch, 2));
          // Ordered on a CUDA stream: without a CUDA driver (CI) UNSUPPORTED, nothing submitted.
          if (!new java.io.File("/usr/lib/x86_64-linux-gnu/libcuda.so.1").exists()) {
            expectStatus(MC_ERR_UNSUPPORTED, () -> Mc.mc_batch_submit_on_stream(batch,
                new Request[] {new Request(MC_WRITE, s, seg, remote, n / 2)}, 0L));
            expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_batch_status(batch, 2));
          }
          Mc.mc_batch_reset(batch);
          Mc.mc_batch_cancel(batch);
        }
        for (int i = 0; i < n / 2; i++) {
          expect(target.get(i) == src.get(i + n / 2), "swapped lower half at " + i);
          expect(target.get(i + n / 2) == src.get(i), "swapped upper half at " + i);
        }

        SegmentInfo info = Mc.mc_segment_query(a, seg);
        expectEq(MC_SEGMENT_OK, info.getState(), "segment state");
        expectEq(1, info.getBuffer_count(), "buffer count");
        expectEq(n, info.getTotal_bytes(), "total bytes");
        expect(!info.getTransport().isEmpty(), "transport named");
        String stats = Mc.mc_engine_stats_json(a);
        expect(stats.startsWith("{") && stats.contains("\"requests_completed\""), "stats json " + stats);

        Mc.mc_segment_close(a, seg);
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_segment_close(a, seg));
        Mc.mc_buffer_unregister(a, src);
        Mc.mc_buffer_unregister(a, back);
        Mc.mc_buffer_unregister(b, target);
      }
    });

    check("errors: unregistered memory, heap buffer, unknown peer, overlap", () -> {
      try (Engine a = engine(); Engine b = engine()) {
        ByteBuffer reg = ByteBuffer.allocateDirect(4096), loose = ByteBuffer.allocateDirect(4096);
        ByteBuffer target = ByteBuffer.allocateDirect(4096);
        Mc.mc_buffer_register(a, reg, null);
        Mc.mc_buffer_register(b, target, null);
        expectStatus(MC_ERR_EXISTS, () -> Mc.mc_buffer_register(a, reg, null));
        expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_buffer_register(a, ByteBuffer.allocate(64), null));
        expectStatus(MC_ERR_INVALID_ARG, () -> Mc.addressOf(ByteBuffer.allocate(64)));
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_buffer_unregister(a, loose));
        long seg = Mc.mc_segment_open(a, Mc.mc_engine_name(b));
        long remote = Mc.mc_segment_buffers(a, seg)[0].getAddr();
        // Local memory not registered: OUT_OF_RANGE, as in C (no hidden staging).
        expectStatus(MC_ERR_OUT_OF_RANGE,
                     () -> Mc.mc_transfer(a, new Request[] {Request.write(loose, seg, remote, 8)}, 5000));
        // Remote range past the peer's buffer.
        expectStatus(MC_ERR_OUT_OF_RANGE,
                     () -> Mc.mc_transfer(a, new Request[] {Request.write(reg, seg, remote + 4090, 8)}, 5000));
        expectStatus(MC_ERR_INVALID_ARG,
                     () -> Mc.mc_transfer(a, new Request[] {Request.write(reg, seg, remote, 0)}, 5000));
        expectStatus(MC_ERR_INVALID_ARG,
                     () -> Mc.mc_transfer(a, new Request[] {null}, 5000));
        // Nobody listens on port 1.
        McException e = expectStatus(MC_ERR_PEER_DOWN, () -> Mc.mc_segment_open(a, "127.0.0.1:1"));
        expect(e.libraryMessage().contains("127.0.0.1:1"), "message names the peer: " + e.libraryMessage());
        expect(e.code() == ErrorCode.PeerDown, "code() is ErrorCode.PeerDown: " + e.code());
        expect(ErrorCode.of(-1000) == ErrorCode.Other, "an unknown status is ErrorCode.Other");
        Mc.mc_segment_close(a, seg);
      }
    });

    check("mc_buffer_alloc / mc_buffer_free and batch registration", () -> {
      try (Engine a = engine(); Engine b = engine()) {
        ByteBuffer m = Mc.mc_buffer_alloc(b, 8192, null);
        expect(m.isDirect(), "direct");
        expectEq(8192, m.capacity(), "capacity");
        ByteBuffer[] many = new ByteBuffer[4];
        for (int i = 0; i < many.length; i++) {
          many[i] = ByteBuffer.allocateDirect(4096);
          fill(many[i], i);
        }
        Mc.mc_buffer_register_batch(a, many);
        expectStatus(MC_ERR_EXISTS, () -> Mc.mc_buffer_register_batch(a, new ByteBuffer[] {many[2]}));
        long seg = Mc.mc_segment_open(a, Mc.mc_engine_name(b));
        BufferInfo[] bufs = Mc.mc_segment_buffers(a, seg);
        expectEq(1, bufs.length, "alloc'd buffer published");
        expectEq(Mc.addressOf(m), bufs[0].getAddr(), "its address");
        Request[] reqs = new Request[4];
        for (int i = 0; i < 4; i++) reqs[i] = Request.write(many[i], seg, bufs[0].getAddr() + 2048L * i, 2048);
        Mc.mc_transfer(a, reqs, 5000);
        for (int i = 0; i < 4; i++)
          for (int j = 0; j < 2048; j++)
            expect(m.get(2048 * i + j) == many[i].get(j), "alloc'd memory byte " + (2048 * i + j));
        Mc.mc_segment_close(a, seg);
        Mc.mc_buffer_unregister_batch(a, many);
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_buffer_unregister_batch(a, many));
        expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_buffer_unregister(b, m)); // alloc'd: mc_buffer_free only
        Mc.mc_buffer_free(b, m);
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_buffer_free(b, m));
      }
    });

    check("mc_buffer_set_access: a read-only buffer refuses a peer's WRITE (MC_ERR_DENIED)", () -> {
      try (Engine a = engine(); Engine b = engine()) {
        int n = 8192;
        ByteBuffer src = ByteBuffer.allocateDirect(n), target = ByteBuffer.allocateDirect(n);
        fill(src, 3);
        fill(target, 50);
        Mc.mc_buffer_register(a, src, null);
        Mc.mc_buffer_register(b, target, null);
        long seg = Mc.mc_segment_open(a, Mc.mc_engine_name(b));
        long remote = Mc.addressOf(target);

        Mc.mc_buffer_set_access(b, target, MC_ACCESS_READ);
        expectStatus(MC_ERR_DENIED,
                     () -> Mc.mc_transfer(a, new Request[] {Request.write(src, seg, remote, n)}, 5000));
        for (int i = 0; i < n; i++) expect(target.get(i) == (byte) (i * 31 + 50), "denied WRITE wrote byte " + i);
        Mc.mc_transfer(a, new Request[] {Request.read(src, seg, remote, n)}, 5000);
        same(target, src, n, "READ of a read-only buffer");

        Mc.mc_buffer_set_access(b, target, 0);
        expectStatus(MC_ERR_DENIED,
                     () -> Mc.mc_transfer(a, new Request[] {Request.read(src, seg, remote, n)}, 5000));
        Mc.mc_buffer_set_access(b, target, MC_ACCESS_READ | MC_ACCESS_WRITE);
        fill(src, 9);
        Mc.mc_transfer(a, new Request[] {Request.write(src, seg, remote, n)}, 5000);
        same(src, target, n, "written after access was given back");

        expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_buffer_set_access(b, target, 4));
        ByteBuffer inside = target.duplicate().position(1).slice();
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_buffer_set_access(b, inside, MC_ACCESS_READ));
        Mc.mc_segment_close(a, seg);
        Mc.mc_buffer_unregister(a, src);
        Mc.mc_buffer_unregister(b, target);
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_buffer_set_access(b, target, MC_ACCESS_READ));
      }
    });

    check("notifications: WRITE then NOTIFY, mc_notify_recv, the event fd", () -> {
      try (Engine a = engine(); Engine b = engine()) {
        int n = 64 * 1024;
        ByteBuffer src = ByteBuffer.allocateDirect(n), dst = ByteBuffer.allocateDirect(n);
        fill(src, 3);
        Mc.mc_buffer_register(a, src, null);
        Mc.mc_buffer_register(b, dst, null);
        long seg = Mc.mc_segment_open(a, Mc.mc_engine_name(b));
        int fd = Mc.mc_engine_event_fd(b);
        expect(fd >= 0 && fd == Mc.mc_engine_event_fd(b), "event fd " + fd);
        ByteBuffer msg = ByteBuffer.allocateDirect(5);
        for (int i = 0; i < 5; i++) msg.put(i, (byte) ('a' + i));
        Mc.mc_transfer(a, new Request[] {Request.write(src, seg, Mc.addressOf(dst), n),
            Request.notify(msg, seg, 5)});
        ByteBuffer got = ByteBuffer.allocateDirect(MC_NOTIFY_MAX_BYTES);
        Notification info = Mc.mc_notify_recv(b, got);
        expect(info.getLength() == 5, "length " + info.getLength());
        expect(info.getPeer().equals(Mc.mc_engine_name(a)), "peer " + info.getPeer());
        same(msg, got, 5, "message");
        same(src, dst, n, "the WRITE before it");
        try {
          Mc.mc_notify_recv(b, got);
          throw new AssertionError("an empty queue gave a notification");
        } catch (McException e) {
          expect(e.code() == ErrorCode.NotFound, "empty queue: " + e.code());
        }
        try {
          Mc.mc_transfer(a, new Request[] {new Request(MC_NOTIFY, Mc.addressOf(msg), seg, 8, 5)});
          throw new AssertionError("a NOTIFY with remote != 0 was accepted");
        } catch (McException e) {
          expect(e.code() == ErrorCode.InvalidArg, "bad NOTIFY: " + e.code());
        }
        Mc.mc_buffer_unregister(a, src);
        Mc.mc_buffer_unregister(b, dst);
      }
    });
    check("heap", () -> {
      try (Heap h = Mc.mc_heap_create(1 << 20)) {
        long a = Mc.mc_heap_alloc(h, 4096, 64);
        long b = Mc.mc_heap_alloc(h, 100, 4096);
        expectEq(0, a % 64, "aligned");
        expectEq(0, b % 4096, "aligned");
        expect(b >= a + 4096 || b + 100 <= a, "no overlap");
        HeapStats st = Mc.mc_heap_stats(h);
        expectEq(1 << 20, st.getCapacity(), "capacity");
        expectEq(2, st.getAllocations(), "allocations");
        expectEq(st.getCapacity() - st.getUsed(), st.getFree(), "free");
        expectStatus(MC_ERR_NO_MEMORY, () -> Mc.mc_heap_alloc(h, 2 << 20, 1));
        Mc.mc_heap_free(h, a);
        expectStatus(MC_ERR_NOT_FOUND, () -> Mc.mc_heap_free(h, a));
        Mc.mc_heap_free(h, b);
        st = Mc.mc_heap_stats(h);
        expectEq(0, st.getUsed(), "all free");
        expectEq(1 << 20, st.getLargest_free(), "merged");
      }
      expectStatus(MC_ERR_INVALID_ARG, () -> Mc.mc_heap_create(0));
    });

    check("ownership: close twice, batch outlives its engine", () -> {
      Engine a = engine();
      Batch batch = Mc.mc_batch_create(a, 4);
      a.close();
      a.close();
      a.delete();
      batch.close(); // after the engine: allowed by mc.h
      batch.close();
      Heap h = Mc.mc_heap_create(4096);
      h.delete();
      h.close();
    });

    check("segment callback (engine thread -> Java) and log handler", () -> {
      List<String> lines = new ArrayList<>();
      Mc.mc_log_set_handler((level, msg) -> { synchronized (lines) { lines.add(level + " " + msg); } });
      Mc.mc_log_set_level(MC_LOG_DEBUG);
      CountDownLatch down = new CountDownLatch(1);
      AtomicInteger calls = new AtomicInteger();
      try (Engine a = engine("heartbeat_ms", "50", "peer_timeout_ms", "300")) {
        Engine b = engine();
        long seg = Mc.mc_segment_open(a, Mc.mc_engine_name(b));
        Mc.mc_engine_set_segment_callback(a, (s, state, inc) -> {
          calls.incrementAndGet();
          if (s == seg && state == MC_SEGMENT_UNREACHABLE) down.countDown();
        });
        b.close();
        expect(down.await(10, TimeUnit.SECONDS), "UNREACHABLE reported to Java");
        expectEq(MC_SEGMENT_UNREACHABLE, Mc.mc_segment_query(a, seg).getState(), "state");
        Mc.mc_engine_set_segment_callback(a, null);
      } finally {
        Mc.mc_log_set_level(MC_LOG_WARN);
        Mc.mc_log_set_handler(null);
      }
      synchronized (lines) {
        expect(!lines.isEmpty(), "log lines reached the Java handler at debug level");
      }
    });

    System.out.println("java: " + passed + " passed, " + failed + " failed");
    System.exit(failed == 0 ? 0 : 1);
  }
}
