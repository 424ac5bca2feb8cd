//! A response body on its way from a backend to the client in the express lane: framed by
//! its length or chunked (chunks passed on as they come, chunk extensions and trailers
//! dropped, as the full path does for a client that did not ask for trailers). What is
//! ready goes out in one write; the client's bytes are written before each wait on the
//! backend, and the backend has `VX11_UPSTREAM_IDLE_TIMEOUT` to send each part.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use vx11_service::express::read_some;

/// Why a body could not be passed on whole: the client's connection must be cut.
#[derive(Debug)]
pub enum Cut {
    /// The backend broke the framing, closed early, or was silent too long.
    Backend,
    /// The client's socket failed.
    Client,
}

/// The backend side of a copy: its socket, what was read of it and not passed on yet, and
/// how long it may be silent.
#[derive(Debug)]
pub struct From<'a, U> {
    pub upstream: &'a mut U,
    pub buf: &'a mut BytesMut,
    pub idle: Duration,
    /// Chunk-size lines and trailers are cut at this many bytes.
    pub max_line: usize,
}

/// The client side: its socket, and what is to be written to it (a head, parts of a body).
#[derive(Debug)]
pub struct To<'a, C> {
    pub client: &'a mut C,
    pub out: &'a mut Vec<u8>,
}

impl<C: AsyncWrite + Unpin> To<'_, C> {
    pub async fn flush(&mut self) -> Result<(), Cut> {
        if !self.out.is_empty() {
            self.client
                .write_all(self.out)
                .await
                .map_err(|_| Cut::Client)?;
            self.out.clear();
        }
        Ok(())
    }
}

impl<U: AsyncRead + Unpin> From<'_, U> {
    /// Reads more from the backend, after handing the client what is ready.
    async fn more<C: AsyncWrite + Unpin>(&mut self, to: &mut To<'_, C>) -> Result<(), Cut> {
        to.flush().await?;
        let limit = self.buf.len() + 64 * 1024;
        match tokio::time::timeout(self.idle, read_some(self.upstream, self.buf, limit)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            _ => Err(Cut::Backend),
        }
    }

    /// Passes on exactly `length` bytes; the last of them are left in `to.out` for the
    /// caller's last write.
    pub async fn length<C: AsyncWrite + Unpin>(
        &mut self,
        length: u64,
        to: &mut To<'_, C>,
    ) -> Result<(), Cut> {
        self.pass(length, to).await
    }

    /// Moves `length` bytes to what is to be written (writing before each wait).
    async fn pass<C: AsyncWrite + Unpin>(
        &mut self,
        mut length: u64,
        to: &mut To<'_, C>,
    ) -> Result<(), Cut> {
        loop {
            let n = usize::try_from(length)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            to.out.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            length -= n as u64;
            if length == 0 {
                return Ok(());
            }
            self.more(to).await?;
        }
    }

    /// Passes on a chunked body, to its last chunk and the trailer section; the end is left
    /// in `to.out` for the caller's last write.
    pub async fn chunked<C: AsyncWrite + Unpin>(&mut self, to: &mut To<'_, C>) -> Result<(), Cut> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(self.buf) {
                    Ok(httparse::Status::Complete((read, size))) => {
                        self.buf.advance(read);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < self.max_line => {
                        self.more(to).await?;
                    }
                    _ => return Err(Cut::Backend),
                }
            };
            if size == 0 {
                self.trailers(to).await?;
                to.out.extend_from_slice(b"0\r\n\r\n");
                return Ok(());
            }
            to.out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            self.pass(size, to).await?;
            while self.buf.len() < 2 {
                self.more(to).await?;
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(Cut::Backend);
            }
            self.buf.advance(2);
            to.out.extend_from_slice(b"\r\n");
        }
    }

    /// Reads past the trailer section (dropped) to the body's end.
    async fn trailers<C: AsyncWrite + Unpin>(&mut self, to: &mut To<'_, C>) -> Result<(), Cut> {
        loop {
            if self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
                return Ok(());
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.buf.advance(end + 4);
                return Ok(());
            }
            if self.buf.len() >= self.max_line {
                return Err(Cut::Backend);
            }
            self.more(to).await?;
        }
    }
}
