use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mc::{Access, Engine, ErrorCode, Heap, Request, RequestState, SegmentState};

/// A time limit of `secs` seconds times MC_TEST_SLACK (default 1), the factor tests/testutil.h
/// applies to every time limit of the C tests, so that a loaded CI machine never fails a correct
/// build.
fn within(secs: u64) -> Duration {
    let slack = std::env::var("MC_TEST_SLACK")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(1);
    Duration::from_secs(secs * slack)
}

fn engine() -> Engine {
    Engine::new([
        ("listen", "127.0.0.1:0"),
        ("workers", "2"),
        ("timeout_ms", "3000"),
    ])
    .unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn version() {
    let (major, minor, patch) = mc::version();
    assert_eq!(major, 0);
    assert_eq!(mc::version_string(), format!("{major}.{minor}.{patch}"));
}

#[test]
fn errors_carry_status_and_message() {
    let e = Engine::new([("no_such_key", "1")]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    assert_eq!(e.status(), -1);
    assert!(e.message().contains("no_such_key"), "{e}");
    assert!(e.to_string().contains("invalid argument"));
    assert_eq!(ErrorCode::from_status(-9999), ErrorCode::Other);
    for (s, c) in [
        (-2, ErrorCode::NoMemory),
        (-3, ErrorCode::NotFound),
        (-4, ErrorCode::OutOfRange),
        (-5, ErrorCode::Exists),
        (-6, ErrorCode::Busy),
        (-7, ErrorCode::Timeout),
        (-8, ErrorCode::PeerDown),
        (-9, ErrorCode::Transport),
        (-10, ErrorCode::Unsupported),
        (-11, ErrorCode::Metadata),
        (-12, ErrorCode::Internal),
        (-13, ErrorCode::BufferTooSmall),
        (-14, ErrorCode::Canceled),
        (-15, ErrorCode::Denied),
    ] {
        assert_eq!(ErrorCode::from_status(s), c);
        assert_ne!(mc::status_str(s), mc::status_str(-9999));
    }

    let eng = engine();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = eng.open(&format!("127.0.0.1:{port}")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PeerDown, "{e}");
    let buf = eng.alloc(8192).unwrap();
    let e = unsafe { eng.register_raw(buf.as_ptr().add(4096) as *mut u8, 4096, None) }.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exists);
    assert_eq!(eng.batch(0).err().unwrap().code(), ErrorCode::InvalidArg);
    assert_eq!(eng.alloc(0).err().unwrap().code(), ErrorCode::InvalidArg);
}

#[test]
fn messages_are_per_thread() {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let key = format!("bad_key_{i}");
                for _ in 0..100 {
                    let e = Engine::new([(key.as_str(), "1")]).unwrap_err();
                    assert!(e.message().contains(&key), "{e}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn loopback_write_read() {
    let (a, b) = (engine(), engine());
    let n = 1 << 20;
    let mut src = a.alloc(n).unwrap();
    src.copy_from_slice(&pattern(n, 7));
    let dst = b.alloc(n).unwrap();
    let seg = a.open(b.name()).unwrap();
    let info = seg.info().unwrap();
    assert_eq!(info.state, SegmentState::Ok);
    assert_eq!((info.buffer_count, info.total_bytes), (1, n as u64));
    assert!(
        info.transport == "tcp" || info.transport == "shm",
        "{}",
        info.transport
    );
    let bufs = seg.buffers().unwrap();
    assert_eq!(bufs.len(), 1);
    assert_eq!((bufs[0].addr, bufs[0].length), (dst.addr(), n as u64));
    assert!(bufs[0].location.starts_with("cpu"));

    a.write(&src, &seg, dst.addr(), None).unwrap();
    assert!(dst[..] == src[..]);
    let mut back = a.register(vec![0u8; 4096]).unwrap();
    a.read(&mut back, &seg, dst.addr() + 4096, None).unwrap();
    assert_eq!(&back[..], &src[4096..8192]);
    // With a wall-clock limit on top of the engine's own bound.
    let mut back2 = a.register(vec![0u8; 4096]).unwrap();
    a.write(&src[8192..12288], &seg, dst.addr(), Some(within(5)))
        .unwrap();
    a.read(&mut back2, &seg, dst.addr(), Some(within(5)))
        .unwrap();
    assert_eq!(&back2[..], &src[8192..12288]);
    a.write(&src[..4096], &seg, dst.addr(), None).unwrap();
    let back = back.into_inner();
    assert_eq!(back.len(), 4096);

    // Unregistered local memory is refused, not copied.
    let e = a.write(&[0u8; 64], &seg, dst.addr(), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OutOfRange, "{e}");
    let e = a.write(&src, &seg, dst.addr() + 1, None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OutOfRange);

    let stats = a.stats_json().unwrap();
    assert!(stats.contains("\"requests_completed\""), "{stats}");
    assert!(stats.contains(a.name()));
}

#[test]
fn own_segment_is_local() {
    let e = engine();
    let mut src = e.alloc(8192).unwrap();
    src.fill(b'x');
    let dst = e.alloc(8192).unwrap();
    let seg = e.open(e.name()).unwrap();
    assert_eq!(seg.info().unwrap().transport, "local");
    e.write(&src, &seg, dst.addr(), None).unwrap();
    assert!(dst.iter().all(|&c| c == b'x'));
}

#[test]
fn batch_and_transfer() {
    let (a, b) = (engine(), engine());
    const N: usize = 16;
    const SIZE: usize = 65536;
    let mut src = a.alloc(N * SIZE).unwrap();
    for (i, chunk) in src.chunks_mut(SIZE).enumerate() {
        chunk.fill(i as u8);
    }
    let dst = b.alloc(N * SIZE).unwrap();
    let seg = a.open(b.name()).unwrap();
    let remote = dst.addr();
    {
        let mut batch = a.batch(N).unwrap();
        let reqs: Vec<_> = src
            .chunks(SIZE)
            .enumerate()
            .map(|(i, c)| Request::write(c, &seg, remote + (i * SIZE) as u64))
            .collect();
        let mut it = reqs.into_iter();
        assert_eq!(batch.submit(it.by_ref().take(N / 2)).unwrap(), 0);
        assert_eq!(batch.submit(it).unwrap(), N / 2);
        assert_eq!(batch.len(), N);
        batch.wait(Some(within(5))).unwrap();
        for i in 0..N {
            let st = batch.status(i).unwrap();
            assert_eq!(
                (st.state, st.error, st.bytes),
                (RequestState::Completed, 0, SIZE as u64)
            );
        }
        assert_eq!(batch.status(N).unwrap_err().code(), ErrorCode::InvalidArg);
        let e = batch
            .submit([Request::write(&src[..SIZE], &seg, remote)])
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg); // capacity used up
        batch.reset().unwrap();
        assert!(batch.is_empty());
        batch.cancel().unwrap(); // nothing pending: fine
    }
    assert!(dst[..] == src[..]);

    // Read back into a cleared src: the READs must bring every byte back themselves.
    let expected = src.to_vec();
    src.fill(0);
    let mut reqs: Vec<_> = src
        .chunks_mut(SIZE)
        .enumerate()
        .map(|(i, c)| Request::read(c, &seg, remote + (i * SIZE) as u64))
        .collect();
    a.transfer(&mut reqs, Some(within(5))).unwrap();
    drop(reqs);
    assert!(src[..] == expected[..]);
}

#[test]
fn concurrent_writers() {
    let (a, b) = (engine(), engine());
    const T: usize = 4;
    const SIZE: usize = 1 << 16;
    let mut src = a.alloc(T * SIZE).unwrap();
    src.copy_from_slice(&pattern(T * SIZE, 3));
    let dst = b.alloc(T * SIZE).unwrap();
    let seg = a.open(b.name()).unwrap();
    let remote = dst.addr();
    let batch = a.batch(T * 10).unwrap();
    std::thread::scope(|s| {
        for (i, chunk) in src.chunks(SIZE).enumerate() {
            let (a, seg, batch) = (&a, &seg, &batch);
            s.spawn(move || {
                for k in 0..10 {
                    let r = remote + (i * SIZE) as u64;
                    if k % 2 == 0 {
                        a.write(chunk, seg, r, None).unwrap();
                    } else {
                        batch.submit([Request::write(chunk, seg, r)]).unwrap();
                    }
                }
            });
        }
    });
    batch.wait(Some(within(10))).unwrap();
    drop(batch);
    assert!(dst[..] == src[..]);
}

#[test]
fn register_batch_and_transfer_into_last() {
    let (a, b) = (engine(), engine());
    const N: usize = 100;
    let regs = b
        .register_batch((0..N).map(|i| vec![0u8; 4096 + i]))
        .unwrap();
    assert_eq!(regs.len(), N);
    let seg = a.open(b.name()).unwrap();
    let bufs = seg.buffers().unwrap();
    assert_eq!(bufs.len(), N);
    let last = &regs[N - 1];
    assert!(bufs
        .iter()
        .any(|x| x.addr == last.addr() && x.length == last.len() as u64));
    let mut src = a.alloc(last.len()).unwrap();
    src.copy_from_slice(&pattern(last.len(), 9));
    a.write(&src, &seg, last.addr(), None).unwrap();
    assert!(regs[N - 1][..] == src[..]);
    assert!(regs[N - 2].iter().all(|&c| c == 0));

    // All or nothing: one overlap registers none.
    let mut fresh = vec![0u8; 4096];
    let overlap = regs[0].as_ptr() as *mut u8;
    let e =
        unsafe { b.register_batch_raw(&[(fresh.as_mut_ptr(), 4096, None), (overlap, 16, None)]) }
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exists, "{e}");
    let e = unsafe { b.unregister_raw(fresh.as_mut_ptr()) }.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = unsafe { b.unregister_batch_raw(&[fresh.as_mut_ptr()]) }.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(b.register_batch(Vec::<Vec<u8>>::new()).unwrap().is_empty());

    let mems = b.unregister_batch(regs).unwrap();
    assert_eq!(mems.len(), N);
    assert!(mems[N - 1][..] == src[..]);
    assert_eq!(mems[7].len(), 4096 + 7);
    // Another engine's buffers are refused.
    let other = a.register_batch([vec![0u8; 64]]).unwrap();
    assert_eq!(
        b.unregister_batch(other).unwrap_err().code(),
        ErrorCode::InvalidArg
    );
}

#[test]
fn set_access_denies_peers() {
    let (a, b) = (engine(), engine());
    let n = 8192;
    let target = b.alloc(n).unwrap();
    let mut src = a.alloc(n).unwrap();
    src.fill(b'w');
    let seg = a.open(b.name()).unwrap();
    a.write(&src, &seg, target.addr(), None).unwrap();

    target.set_access(Access::READ).unwrap();
    let mut back = a.alloc(n).unwrap();
    a.read(&mut back, &seg, target.addr(), None).unwrap();
    assert!(back.iter().all(|&c| c == b'w'));
    src.fill(b'x');
    let e = a.write(&src, &seg, target.addr(), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");
    assert!(target.iter().all(|&c| c == b'w'), "a denied WRITE wrote");

    b.set_access(target.addr(), Access::NONE).unwrap();
    let e = a.read(&mut back, &seg, target.addr(), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");

    let reg = b.register(vec![0u8; 4096]).unwrap();
    reg.set_access(Access::WRITE).unwrap();
    a.write(&src[..4096], &seg, reg.addr(), None).unwrap();
    assert!(reg.iter().all(|&c| c == b'x'));
    let e = a
        .read(&mut back[..4096], &seg, reg.addr(), None)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Denied, "{e}");

    target.set_access(Access::READ | Access::WRITE).unwrap();
    assert_eq!(Access::READ | Access::WRITE, Access::READ_WRITE);
    assert!(Access::READ_WRITE.contains(Access::WRITE));
    a.write(&src, &seg, target.addr(), None).unwrap();
    assert!(target.iter().all(|&c| c == b'x'));

    let e = b
        .set_access(target.addr(), Access::from_bits(4))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    let e = b.set_access(target.addr() + 1, Access::READ).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[test]
fn auth_token_mismatch_is_denied() {
    let token = "t".repeat(32);
    let with = |t: Option<&str>| {
        let mut cfg = vec![("listen", "127.0.0.1:0"), ("timeout_ms", "3000")];
        if let Some(t) = t {
            cfg.push(("auth_token", t));
        }
        Engine::new(cfg).unwrap()
    };
    let other_token = "u".repeat(32);
    let (a, b, c, d) = (
        with(Some(&token)),
        with(Some(&other_token)),
        with(None),
        with(Some(&token)),
    );
    for other in [&b, &c] {
        let e = a.open(other.name()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Denied, "{e}");
        assert!(!e.to_string().contains(&token));
    }
    assert_eq!(c.open(a.name()).unwrap_err().code(), ErrorCode::Denied);
    let dst = a.alloc(4096).unwrap();
    let mut src = d.alloc(4096).unwrap();
    src.fill(b'k');
    let seg = d.open(a.name()).unwrap();
    d.write(&src, &seg, dst.addr(), None).unwrap();
    assert!(dst.iter().all(|&x| x == b'k'));
}

#[test]
fn heap() {
    let h = Heap::new(1 << 30).unwrap();
    let off = h.alloc(4096, 64).unwrap();
    assert_eq!(off % 64, 0);
    let st = h.stats().unwrap();
    assert_eq!((st.capacity, st.allocations), (1 << 30, 1));
    assert!(st.used >= 4096 && st.free == st.capacity - st.used);
    h.free(off).unwrap();
    assert_eq!(h.free(off).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(h.alloc(2 << 30, 1).unwrap_err().code(), ErrorCode::NoMemory);
    assert_eq!(Heap::new(0).err().unwrap().code(), ErrorCode::InvalidArg);
}

#[test]
fn log_handler() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    mc::set_log_handler(Some(Box::new(move |_lvl, msg| {
        l2.lock().unwrap().push(msg.to_owned())
    })));
    mc::set_log_level(mc::LogLevel::Debug);
    {
        let e = Engine::new([("listen", "127.0.0.1:0"), ("log_level", "debug")]).unwrap();
        let _b = e.alloc(4096).unwrap();
    }
    mc::set_log_level(mc::LogLevel::Warn);
    mc::set_log_handler(None);
    assert!(!lines.lock().unwrap().is_empty());
}

fn build_dir() -> PathBuf {
    std::env::var_os("MC_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../build"))
}

/// A target in another process: `mc_bench target` when built, else this test binary re-run
/// in target mode (see `helper_target`).
#[test]
fn two_process() {
    let bench = build_dir().join("bin/mc_bench");
    let mut cmd = if bench.exists() {
        let mut c = Command::new(bench);
        c.args(["target", "--listen", "127.0.0.1:0", "--size", "64M"]);
        c
    } else {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "helper_target",
            "--nocapture",
            "--test-threads=1",
        ]);
        c.env("MC_RUST_HELPER_TARGET", "1");
        c
    };
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // libtest prints "test helper_target ... " before the helper's own line.
    let name = loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            child.kill().ok();
            panic!("target exited without printing its segment");
        }
        if let Some(i) = line.find("segment: ") {
            break line[i + "segment: ".len()..].trim().to_owned();
        }
    };
    let result = std::panic::catch_unwind(|| {
        let e = engine();
        let seg = e.open(&name).unwrap();
        let bufs = seg.buffers().unwrap();
        let n = 16 << 20;
        assert!(bufs[0].length >= n as u64);
        let mut src = e.alloc(n).unwrap();
        src.copy_from_slice(&pattern(n, 11));
        let mut dst = e.alloc(n).unwrap();
        e.write(&src, &seg, bufs[0].addr, None).unwrap();
        e.read(&mut dst, &seg, bufs[0].addr, None).unwrap();
        assert!(src[..] == dst[..]);
    });
    child.kill().ok();
    child.wait().ok();
    result.unwrap();
}

#[test]
fn helper_target() {
    if std::env::var_os("MC_RUST_HELPER_TARGET").is_none() {
        return;
    }
    let e = Engine::new([("listen", "127.0.0.1:0")]).unwrap();
    let _buf = e.alloc(64 << 20).unwrap();
    println!("segment: {}", e.name());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn file_segment_by_name() {
    let e = engine();
    let path = std::env::temp_dir().join(format!("mc-rust-file-{}.bin", std::process::id()));
    let seg = e
        .open(&format!("file://{}?size=64K", path.display()))
        .unwrap();
    assert_eq!(seg.info().unwrap().transport, "file");
    let bufs = seg.buffers().unwrap();
    assert_eq!((bufs[0].addr, bufs[0].length), (0, 65536));
    assert_eq!(bufs[0].location, "file");
    let mut src = e.alloc(4096).unwrap();
    src.copy_from_slice(&pattern(4096, 9));
    let mut back = e.register(vec![0u8; 4096]).unwrap();
    e.write(&src, &seg, 1000, None).unwrap();
    e.read(&mut back, &seg, 1000, None).unwrap();
    assert_eq!(&back[..], &src[..]);
    assert_eq!(&std::fs::read(&path).unwrap()[1000..5096], &src[..]);
    drop(seg);
    let _ = std::fs::remove_file(&path);
    let err = e.open("file://relative/x").unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArg, "{err}");
}

/// submit_on_stream without a CUDA driver (CI): Unsupported, nothing submitted. Skipped where a
/// driver is installed (the C suite's GPU tests cover it there).
#[test]
fn submit_on_stream_without_cuda() {
    for p in [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
        "/usr/lib/libcuda.so.1",
    ] {
        if std::path::Path::new(p).exists() {
            eprintln!("skipped: a CUDA driver is installed ({p})");
            return;
        }
    }
    let (a, b) = (engine(), engine());
    let src = a.alloc(4096).unwrap();
    let dst = b.alloc(4096).unwrap();
    let seg = a.open(b.name()).unwrap();
    let batch = a.batch(4).unwrap();
    // SAFETY: a null stream is the legacy default stream; nothing runs without a driver.
    let e = unsafe {
        batch.submit_on_stream([Request::write(&src, &seg, dst.addr())], std::ptr::null_mut())
    }
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
    assert!(e.message().contains("CUDA"), "{e}");
    assert_eq!(batch.len(), 0);
    batch.submit([Request::write(&src, &seg, dst.addr())]).unwrap();
    batch.wait(Some(within(5))).unwrap();
}
