//! Moves data to a target in another process and reads it back.
//!
//!     build/bin/mc_bench target --listen 127.0.0.1:0 --size 64M    # prints "segment: NAME"
//!     cargo run --example transfer -- NAME [MiB]
use std::time::Instant;

fn main() -> Result<(), mc::Error> {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: transfer SEGMENT_NAME [MiB]");
    let mib: usize = args.next().map_or(16, |s| s.parse().expect("MiB"));
    let eng = mc::Engine::new([("listen", "127.0.0.1:0")])?;
    let seg = eng.open(&name)?;
    let remote = seg
        .buffers()?
        .first()
        .cloned()
        .expect("the target has no buffer");
    let n = (mib << 20).min(remote.length as usize);
    let mut src = eng.alloc(n)?;
    for (i, b) in src.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let mut dst = eng.alloc(n)?;
    let t = Instant::now();
    eng.write(&src, &seg, remote.addr, None)?;
    let tw = t.elapsed();
    let t = Instant::now();
    eng.read(&mut dst, &seg, remote.addr, None)?;
    let tr = t.elapsed();
    let ok = src[..] == dst[..];
    println!(
        "{}: wrote {n} bytes in {tw:?} ({:.2} GB/s), read back in {tr:?} ({:.2} GB/s): {}",
        seg.info()?.transport,
        n as f64 / tw.as_secs_f64() / 1e9,
        n as f64 / tr.as_secs_f64() / 1e9,
        if ok { "match" } else { "MISMATCH" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
