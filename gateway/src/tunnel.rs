//! The bytes of an upgraded WebSocket connection, copied both ways between the client and
//! the backend until either side closes, under the tunnel's limits: no byte either way for
//! the idle timeout, or one frame over the size limit ([`crate::frame_guard`]), ends it;
//! so does `stop` (shutdown, the token no longer valid). One direction reaching its end
//! shuts down the write side of the other (a half-close); the tunnel is over when both
//! have ended. Whatever ends it, both sockets are shut down and dropped here.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;
use vx11_service::parse_duration;

use crate::frame_guard::{FrameGuard, server_close_frame};

/// Bytes read at a time in each direction.
const CHUNK: usize = 16 * 1024;

/// How long the last words (a close frame, the shutdowns) may take once a tunnel ends.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// The WebSocket tunnels' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct WebSocketArgs {
    /// Close a WebSocket tunnel through which no byte has passed, either way, for this
    /// long (a client that reads nothing stops the bytes too).
    #[arg(long, env = "VX11_WEBSOCKET_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub websocket_idle_timeout: Duration,

    /// Largest payload of one WebSocket frame, either way, in bytes: a larger frame closes
    /// its tunnel (close code 1009). Per frame: a message of many frames is not summed.
    #[arg(long, env = "VX11_WEBSOCKET_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub websocket_max_frame_bytes: u64,
}

impl WebSocketArgs {
    /// The limits, or the name of the setting that is zero.
    pub fn limits(&self) -> Result<TunnelLimits, &'static str> {
        if self.websocket_idle_timeout.is_zero() {
            return Err("VX11_WEBSOCKET_IDLE_TIMEOUT");
        }
        if self.websocket_max_frame_bytes == 0 {
            return Err("VX11_WEBSOCKET_MAX_FRAME_BYTES");
        }
        Ok(TunnelLimits {
            idle_timeout: self.websocket_idle_timeout,
            max_frame_bytes: self.websocket_max_frame_bytes,
        })
    }
}

/// A tunnel's limits (`VX11_WEBSOCKET_*`).
#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    pub idle_timeout: Duration,
    pub max_frame_bytes: u64,
}

/// Why a tunnel ended (the `reason` label of `vx11_gateway_websocket_tunnels_ended_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// A frame over `VX11_WEBSOCKET_MAX_FRAME_BYTES`.
    TooLarge,
    /// The gateway is shutting down.
    Shutdown,
    /// The token the tunnel was opened with is no longer valid (removed or expired).
    TokenRevoked,
    /// A socket failed (reset, or the upgrade did not complete).
    Error,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::TooLarge => "too_large",
            End::Shutdown => "shutdown",
            End::TokenRevoked => "token_revoked",
            End::Error => "error",
        }
    }

    /// The close code the client is sent, when the gateway ends the tunnel
    /// (RFC 6455 §7.4.1).
    fn close_code(self) -> Option<u16> {
        match self {
            End::Closed | End::Error => None,
            End::Idle | End::Shutdown => Some(1001),
            End::TooLarge => Some(1009),
            End::TokenRevoked => Some(1008),
        }
    }
}

/// One direction: its frames, and whether a write of it was under way.
struct Direction {
    guard: FrameGuard,
    writing: bool,
    ended: bool,
}

impl Direction {
    fn new(max_frame_bytes: u64) -> Self {
        Self {
            guard: FrameGuard::new(max_frame_bytes),
            writing: false,
            ended: false,
        }
    }

    /// A frame of the gateway's own can go out on this direction now.
    fn between_frames(&self) -> bool {
        !self.ended && !self.writing && self.guard.at_boundary()
    }
}

/// When a byte last passed, either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has passed for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Copies between `client` and `backend` until the tunnel ends; says why.
pub async fn run<C, B>(
    client: C,
    backend: B,
    limits: TunnelLimits,
    stop: impl Future<Output = End>,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let mut up = Direction::new(limits.max_frame_bytes);
    let mut down = Direction::new(limits.max_frame_bytes);
    let activity = Activity::new();
    let end = {
        let upward = pump(&mut client_read, &mut backend_write, &mut up, &activity);
        let downward = pump(&mut backend_read, &mut client_write, &mut down, &activity);
        tokio::select! {
            end = both(upward, downward) => end,
            () = activity.idle_for(limits.idle_timeout) => End::Idle,
            end = stop => end,
        }
    };
    // The client is told why, if its side of the stream is between two frames.
    if let Some(code) = end.close_code()
        && down.between_frames()
    {
        let _ = tokio::time::timeout(
            LAST_WORDS,
            client_write.write_all(&server_close_frame(code)),
        )
        .await;
    }
    let _ = tokio::time::timeout(LAST_WORDS, async {
        let _ = tokio::join!(client_write.shutdown(), backend_write.shutdown());
    })
    .await;
    if end == End::TooLarge && !up.ended {
        // What the client still sends of its frame is read and dropped for a moment, so
        // that closing does not reset the connection before the close frame is read.
        let _ = tokio::time::timeout(LAST_WORDS, discard(&mut client_read)).await;
    }
    end
}

/// Both directions to their end, or the first that fails.
async fn both(
    upward: impl Future<Output = Result<(), End>>,
    downward: impl Future<Output = Result<(), End>>,
) -> End {
    tokio::pin!(upward, downward);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let ended = tokio::select! {
            ended = &mut upward, if !up_done => { up_done = true; ended }
            ended = &mut downward, if !down_done => { down_done = true; ended }
        };
        if let Err(end) = ended {
            return end;
        }
    }
    End::Closed
}

/// `from` to `to` until `from` ends (then `to`'s write side is shut down), a frame is over
/// the limit (the bytes before it are passed on), or a socket fails.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    direction: &mut Direction,
    activity: &Activity,
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| End::Error)?;
        if n == 0 {
            direction.ended = true;
            return to.shutdown().await.map_err(|_| End::Error);
        }
        activity.touch();
        let chunk = &buf[..n];
        let (pass, verdict) = match direction.guard.inspect(chunk) {
            Ok(()) => (n, Ok(())),
            Err(too_large) => (too_large.pass, Err(End::TooLarge)),
        };
        direction.writing = true;
        write_all(to, &chunk[..pass]).await?;
        direction.writing = false;
        verdict?;
    }
}

async fn write_all<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> Result<(), End> {
    if bytes.is_empty() {
        return Ok(());
    }
    to.write_all(bytes).await.map_err(|_| End::Error)?;
    to.flush().await.map_err(|_| End::Error)
}

async fn discard<R: AsyncRead + Unpin>(from: &mut R) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while from.read(&mut buf).await? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_by_name() {
        let args = WebSocketArgs {
            websocket_idle_timeout: Duration::ZERO,
            websocket_max_frame_bytes: 1,
        };
        assert_eq!(args.limits().unwrap_err(), "VX11_WEBSOCKET_IDLE_TIMEOUT");
    }

    const LIMITS: TunnelLimits = TunnelLimits {
        idle_timeout: Duration::from_secs(30),
        max_frame_bytes: 100,
    };

    #[tokio::test]
    async fn bytes_pass_both_ways_and_a_half_close_is_passed_on() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (backend, mut backend_peer) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(run(client, backend, LIMITS, std::future::pending()));
        client_peer
            .write_all(&[0x81, 0x82, 1, 2, 3, 4, 5, 6])
            .await
            .unwrap();
        let mut got = [0u8; 8];
        backend_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x81, 0x82, 1, 2, 3, 4, 5, 6]);
        // The client is done sending: the backend sees the end, and can still answer.
        client_peer.shutdown().await.unwrap();
        assert_eq!(backend_peer.read(&mut got).await.unwrap(), 0);
        backend_peer.write_all(&[0x81, 0x01, b'x']).await.unwrap();
        let mut answer = [0u8; 3];
        client_peer.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, &[0x81, 0x01, b'x']);
        drop(backend_peer);
        assert_eq!(tunnel.await.unwrap(), End::Closed);
        assert_eq!(client_peer.read(&mut answer).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_ends_the_tunnel_with_1009_and_is_not_passed_on() {
        let (client, mut client_peer) = tokio::io::duplex(4096);
        let (backend, mut backend_peer) = tokio::io::duplex(4096);
        let tunnel = tokio::spawn(run(client, backend, LIMITS, std::future::pending()));
        // A small frame, then the header of one of 200 bytes.
        client_peer
            .write_all(&[
                0x82,
                0x81,
                0,
                0,
                0,
                0,
                9,
                0x82,
                0x80 | 126,
                0,
                200,
                1,
                2,
                3,
                4,
            ])
            .await
            .unwrap();
        assert_eq!(tunnel.await.unwrap(), End::TooLarge);
        let mut passed = Vec::new();
        backend_peer.read_to_end(&mut passed).await.unwrap();
        assert_eq!(passed, [0x82, 0x81, 0, 0, 0, 0, 9]);
        let mut told = Vec::new();
        client_peer.read_to_end(&mut told).await.unwrap();
        assert_eq!(told, server_close_frame(1009));
    }

    #[tokio::test]
    async fn stop_ends_the_tunnel_and_closes_both_sides() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (backend, mut backend_peer) = tokio::io::duplex(1024);
        let end = run(client, backend, LIMITS, async { End::Shutdown }).await;
        assert_eq!(end, End::Shutdown);
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, server_close_frame(1001));
        rest.clear();
        backend_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
