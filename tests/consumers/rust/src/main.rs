//! A Rust program outside the mc tree, built only as bindings/rust/README.md says: two engines
//! in one process, 1 MiB written to the target over loopback and read back, compared.
use std::time::Duration;

fn main() -> Result<(), mc::Error> {
    const N: usize = 1 << 20;
    let target = mc::Engine::new([("listen", "127.0.0.1:0")])?;
    let dst = target.alloc(N)?;
    let eng = mc::Engine::new([("listen", "127.0.0.1:0")])?;
    let mut src = eng.alloc(N)?;
    let mut back = eng.alloc(N)?;
    let mut x: u32 = 42;
    for b in src.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (x >> 16) as u8;
    }
    let seg = eng.open(target.name())?;
    eng.write(&src, &seg, dst.addr(), None)?;
    eng.read(&mut back, &seg, dst.addr(), Some(Duration::from_secs(10)))?;
    // Error codes are named after the C codes (MC_ERR_OUT_OF_RANGE).
    let e = eng.write(&src, &seg, dst.addr() + 1, None).unwrap_err();
    assert_eq!(e.code(), mc::ErrorCode::OutOfRange, "{e}");
    let (wrote, read) = (src[..] == dst[..], src[..] == back[..]);
    println!(
        "rust consumer: libmc {}, wrote {N} bytes match={wrote}, read back match={read}",
        mc::version_string()
    );
    std::process::exit(if wrote && read { 0 } else { 1 });
}
