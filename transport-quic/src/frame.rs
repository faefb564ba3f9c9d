//! Frames on a QUIC stream: a `u32` big-endian length, then that many bytes
//! of payload (a bincode-encoded [`wire`](ffrtmp_runtime::wire) message).
//!
//! The reader checks the length against a maximum *before* allocating, and
//! reports a stream that ends inside a frame as truncated: malformed input is
//! an error for that connection, never a panic or an unbounded allocation.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use ffrtmp_runtime::wire::MAX_MESSAGE_BYTES as MAX_FRAME_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the maximum of {1}")]
    TooLarge(usize, usize),
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_frames_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            rt().block_on(async {
                let mut r = &bytes[..];
                while let Ok(Some(f)) = read_frame(&mut r, 128).await {
                    assert!(f.len() <= 128);
                }
            });
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
