//! `frame::read_frame` over an arbitrary stream. The first two bytes choose
//! the maximum frame size (so small maxima, where the size check matters,
//! are reached); the rest is the stream. Also read with the production
//! maximum. Checked against the format read the obvious way.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ffrtmp_transport_quic::frame::{read_frame, FrameError, MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

/// Reading from a slice never waits: one poll finishes the future.
fn read_all(mut stream: &[u8], max: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut frames = Vec::new();
    loop {
        let fut = pin!(read_frame(&mut stream, max));
        let res = match fut.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("a slice reader returned Pending"),
        };
        match res {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn check(stream: &[u8], max: usize) {
    let (frames, end) = read_all(stream, max);
    let mut b = stream;
    for f in &frames {
        assert!(f.len() <= max);
        assert_eq!(&b[..4], &(f.len() as u32).to_be_bytes());
        assert_eq!(&b[4..4 + f.len()], &f[..]);
        b = &b[4 + f.len()..];
    }
    match end {
        None => assert!(b.is_empty()),
        Some(FrameError::TooLarge(n, m)) => {
            assert!(b.len() >= 4 && n > max && m == max);
            assert_eq!(n, u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        }
        Some(FrameError::Truncated { got, want }) => {
            assert!(got < want);
            if b.len() < 4 {
                assert_eq!((got, want), (b.len(), 4));
            } else {
                assert_eq!(
                    (got, want),
                    (
                        b.len() - 4,
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
                    )
                );
            }
        }
        Some(FrameError::Io(e)) => panic!("i/o error from a slice: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        check(data, MAX_FRAME_BYTES);
        return;
    }
    let max = usize::from(u16::from_be_bytes([data[0], data[1]]));
    check(&data[2..], max);
    check(&data[2..], MAX_FRAME_BYTES);
});
