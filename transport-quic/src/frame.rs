//! Frames on a QUIC stream: a `u32` big-endian length, then that many bytes
//! of payload (a bincode-encoded [`wire`](ffrtmp_runtime::wire) message).
//!
//! The reader checks the length against a maximum *before* allocating, and
//! reports a stream that ends inside a frame as truncated: malformed input is
//! an error for that connection, never a panic or an unbounded allocation.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use ffrtmp_runtime::wire::MAX_MESSAGE_BYTES as MAX_FRAME_BYTES;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame's length (first) is over the maximum (second); a reader
    /// refuses it from the header alone.
    #[error("frame of {0} bytes exceeds the maximum of {1}")]
    TooLarge(usize, usize),
    /// The stream ended inside a frame's header or payload.
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes of the header or payload that arrived.
        got: usize,
        /// Bytes it needed.
        want: usize,
    },
    /// The stream itself failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Write one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(payload.len(), MAX_FRAME_BYTES));
    }
    let len = u32::try_from(payload.len())
        .map_err(|_| FrameError::TooLarge(payload.len(), MAX_FRAME_BYTES))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Fill `buf` completely; `Ok(n < len)` when the stream ends first.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Read one frame of at most `max` bytes. `Ok(None)`: the stream ended
/// cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let got = read_full(r, &mut header).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < header.len() {
        return Err(FrameError::Truncated {
            got,
            want: header.len(),
        });
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload).await?;
    if got < len {
        return Err(FrameError::Truncated { got, want: len });
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn round_trips_frames_back_to_back() {
        rt().block_on(async {
            let mut buf = Vec::new();
            for p in [&b""[..], b"a", &[7u8; 1000][..]] {
                write_frame(&mut buf, p).await.expect("write");
            }
            let mut r = &buf[..];
            assert_eq!(read_frame(&mut r, 4096).await.expect("1"), Some(vec![]));
            assert_eq!(
                read_frame(&mut r, 4096).await.expect("2"),
                Some(b"a".to_vec())
            );
            assert_eq!(
                read_frame(&mut r, 4096).await.expect("3"),
                Some(vec![7u8; 1000])
            );
            assert_eq!(read_frame(&mut r, 4096).await.expect("eof"), None);
        });
    }

    #[test]
    fn rejects_oversize_before_allocating_and_truncation() {
        rt().block_on(async {
            // A header announcing 4 GiB: refused from the header alone.
            let mut r = &[0xff, 0xff, 0xff, 0xff, 1, 2][..];
            assert!(matches!(
                read_frame(&mut r, MAX_FRAME_BYTES).await,
                Err(FrameError::TooLarge(_, _))
            ));
            let mut r = &[0, 0][..];
            assert!(matches!(
                read_frame(&mut r, 64).await,
                Err(FrameError::Truncated { got: 2, want: 4 })
            ));
            let mut r = &[0, 0, 0, 5, 1, 2][..];
            assert!(matches!(
                read_frame(&mut r, 64).await,
                Err(FrameError::Truncated { got: 2, want: 5 })
            ));
            let mut sink = Vec::new();
            assert!(matches!(
                write_frame(&mut sink, &vec![0u8; MAX_FRAME_BYTES + 1]).await,
                Err(FrameError::TooLarge(_, _))
            ));
            assert!(sink.is_empty(), "nothing written for a refused frame");
        });
    }

    #[derive(Debug)]
    enum Ref {
        TooLarge(usize),
        Truncated(usize, usize),
    }

    /// The frame format, read the obvious way over a slice.
    fn reference_frames(mut b: &[u8], max: usize) -> (Vec<Vec<u8>>, Result<(), Ref>) {
        let mut out = Vec::new();
        loop {
            if b.is_empty() {
                return (out, Ok(()));
            }
            if b.len() < 4 {
                return (out, Err(Ref::Truncated(b.len(), 4)));
            }
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len > max {
                return (out, Err(Ref::TooLarge(len)));
            }
            b = &b[4..];
            if b.len() < len {
                return (out, Err(Ref::Truncated(b.len(), len)));
            }
            out.push(b[..len].to_vec());
            b = &b[len..];
        }
    }

    proptest! {
        /// Arbitrary bytes (up to 4 KiB) read as frames exactly as the
        /// format says: each frame is returned whole, a header over the
        /// maximum or a stream ending inside a frame is an error of that
        /// kind, and nothing panics.
        #[test]
        fn arbitrary_bytes_never_panic_and_frames_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            max in 0usize..512,
        ) {
            let (frames, end) = rt().block_on(async {
                let mut r = &bytes[..];
                let mut frames = Vec::new();
                loop {
                    match read_frame(&mut r, max).await {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break (frames, Ok(())),
                        Err(e) => break (frames, Err(e)),
                    }
                }
            });
            let (want_frames, want_end) = reference_frames(&bytes, max);
            prop_assert!(frames.iter().all(|f| f.len() <= max));
            prop_assert_eq!(frames, want_frames);
            match (end, want_end) {
                (Ok(()), Ok(())) => {}
                (Err(FrameError::TooLarge(n, m)), Err(Ref::TooLarge(want))) => {
                    prop_assert_eq!((n, m), (want, max));
                }
                (Err(FrameError::Truncated { got, want }), Err(Ref::Truncated(g, w))) => {
                    prop_assert_eq!((got, want), (g, w));
                }
                (got, want) => prop_assert!(false, "read {:?}, expected {:?}", got, want),
            }
        }

        /// A header claiming more than the maximum is refused from the
        /// header alone: not one payload byte is read (the payload buffer is
        /// sized only after the check).
        #[test]
        fn oversize_header_is_refused_before_the_payload(
            max in 0usize..(1 << 16),
            // Just over the maximum as often as far over it.
            over in prop_oneof![1u64..=2, 1u64..(1 << 32)],
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let claim = (max as u64).saturating_add(over).min(u64::from(u32::MAX));
            prop_assume!(claim > max as u64);
            let mut buf = (claim as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(&tail);
            let (res, left) = rt().block_on(async {
                let mut r = &buf[..];
                let res = read_frame(&mut r, max).await;
                (res, r.len())
            });
            prop_assert!(
                matches!(res, Err(FrameError::TooLarge(n, m)) if n as u64 == claim && m == max),
                "{:?}", res
            );
            prop_assert_eq!(left, tail.len(), "the payload was not read");
        }

        /// A valid stream cut anywhere: whole frames before the cut come
        /// back; a cut inside a frame (header or payload) is `Truncated`,
        /// a cut between frames a clean end.
        #[test]
        fn truncated_streams_are_errors(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
            cut_at in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            let mut boundaries = vec![0usize];
            for p in &payloads {
                buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
                buf.extend_from_slice(p);
                boundaries.push(buf.len());
            }
            let cut = cut_at.index(buf.len());
            let (frames, end) = rt().block_on(async {
                let mut r = &buf[..cut];
                let mut frames = Vec::new();
                loop {
                    match read_frame(&mut r, 64).await {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break (frames, None),
                        Err(e) => break (frames, Some(e)),
                    }
                }
            });
            let whole = boundaries.iter().filter(|&&b| b > 0 && b <= cut).count();
            prop_assert_eq!(&frames[..], &payloads[..whole]);
            if boundaries.contains(&cut) {
                prop_assert!(end.is_none(), "{:?}", end);
            } else {
                prop_assert!(matches!(end, Some(FrameError::Truncated { got, want }) if got < want), "{:?}", end);
            }
        }

        #[test]
        fn what_is_written_is_read(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let back = rt().block_on(async {
                let mut buf = Vec::new();
                for p in &payloads {
                    write_frame(&mut buf, p).await.expect("write");
                }
                let mut r = &buf[..];
                let mut out = Vec::new();
                while let Some(f) = read_frame(&mut r, 300).await.expect("read") {
                    out.push(f);
                }
                out
            });
            prop_assert_eq!(back, payloads);
        }
    }
}
