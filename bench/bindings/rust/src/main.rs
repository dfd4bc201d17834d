//! The Rust row of bench/bindings: one 8-byte WRITE through `Engine::write` (the safe crate)
//! between two engines in this process. usage: bench_rust ITERS WARMUP CHUNKS.
use std::time::Instant;

fn main() -> Result<(), mc::Error> {
    let args: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("number")).collect();
    let (iters, warmup, chunks) = (args[0], args[1], args[2]);
    let transports = std::env::var("BENCH_TRANSPORTS").unwrap_or_else(|_| "shm".into());
    let cfg = [("listen", "127.0.0.1:0"), ("transports", transports.as_str())];
    let a = mc::Engine::new(cfg)?;
    let b = mc::Engine::new(cfg)?;
    // Ordinary memory registered on both ends, as bench_c.c does (mc_buffer_alloc memory would
    // take shm's memfd path and not be the same work as the C row).
    let mut mem = vec![0u8; 4096];
    mem[..8].fill(7);
    let local = a.register(mem)?;
    let target = b.register(vec![0u8; 4096])?;
    let seg = a.open(b.name())?;
    let remote = seg.buffers()?[0].addr;
    println!("transport {}", seg.info()?.transport);
    let src = &local[..8];
    for _ in 0..warmup {
        a.write(src, &seg, remote)?;
    }
    let n = iters / chunks;
    let mut per: Vec<f64> = (0..chunks)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                a.write(src, &seg, remote).expect("write");
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    assert_eq!(&target[..8], &[7u8; 8], "data did not arrive");
    per.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!("ns_per_op {:.1}", per[chunks / 2]);
    Ok(())
}
