//! Notifications through the safe crate: Batch::notify, Engine::notify_recv, Engine::event_fd.

use std::time::Duration;

use mc::{Engine, ErrorCode, Request, NOTIFY_MAX_BYTES};

fn engine(extra: &[(&str, &str)]) -> Engine {
    let mut cfg = vec![("listen", "127.0.0.1:0"), ("timeout_ms", "3000")];
    cfg.extend_from_slice(extra);
    Engine::new(cfg).unwrap()
}

fn readable(fd: i32, ms: i32) -> bool {
    let mut p = [0u8; 8];
    let until = std::time::Instant::now() + Duration::from_millis(ms as u64);
    while std::time::Instant::now() < until {
        // SAFETY: p holds 8 bytes; the fd is the engine's non-blocking eventfd.
        if unsafe { libc_read(fd, p.as_mut_ptr(), 8) } == 8 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

extern "C" {
    #[link_name = "read"]
    fn libc_read(fd: i32, buf: *mut u8, n: usize) -> isize;
}

#[test]
fn write_then_notify_arrives_with_the_bytes() {
    let a = engine(&[]);
    let b = engine(&[]);
    let mut src = a.alloc(1 << 20).unwrap();
    let dst = b.alloc(1 << 20).unwrap();
    let seg = a.open(b.name()).unwrap();
    let fd = b.event_fd().unwrap();
    assert_eq!(fd, b.event_fd().unwrap());
    assert!(b.notify_recv().unwrap().is_none());
    for r in 0..10u8 {
        src.iter_mut().enumerate().for_each(|(i, x)| *x = r.wrapping_add(i as u8));
        {
            let batch = a.batch(2).unwrap();
            batch.submit([Request::write(&src, &seg, dst.addr())]).unwrap();
            assert_eq!(batch.notify(&seg, &[r; 3]).unwrap(), 1);
            batch.wait(None).unwrap();
        }
        assert!(readable(fd, 5000));
        let n = b.notify_recv().unwrap().expect("a notification");
        assert_eq!(n.data, vec![r; 3]);
        assert_eq!(n.peer, a.name());
        assert_eq!(&dst[..], &src[..]);
    }
    assert!(b.notify_recv().unwrap().is_none());
}

#[test]
fn bad_notify_and_full_queue() {
    let a = engine(&[]);
    let b = engine(&[("notify_queue", "1")]);
    let seg = a.open(b.name()).unwrap();
    let batch = a.batch(4).unwrap();
    let big = vec![0u8; NOTIFY_MAX_BYTES + 1];
    assert_eq!(batch.notify(&seg, &big).unwrap_err().code(), ErrorCode::InvalidArg);
    assert_eq!(batch.notify(&seg, &[]).unwrap_err().code(), ErrorCode::InvalidArg);
    batch.notify(&seg, b"one").unwrap();
    batch.notify(&seg, b"two").unwrap();
    assert_eq!(batch.wait(None).unwrap_err().code(), ErrorCode::Busy);
    assert_eq!(b.notify_recv().unwrap().unwrap().data, b"one");
    assert!(b.notify_recv().unwrap().is_none());
}
