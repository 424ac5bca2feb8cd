//! Binding the listening sockets: the backlog, `SO_REUSEPORT` for the workers, and errors
//! that name the address and the setting it came from.

use tokio::net::TcpListener;

/// Pending connections the kernel queues for a listener. `TcpListener::bind` asks for std's
/// 128: a burst of new connections beyond that (EventSource clients reconnecting after a
/// restart) has SYNs dropped and retried only after 1 s. The kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` with [`LISTEN_BACKLOG`]; the error names the address and the setting
/// it came from.
pub fn bind_listener(addr: std::net::SocketAddr, setting: &str) -> std::io::Result<TcpListener> {
    listen_on(addr, false).map_err(|error| cannot_listen(addr, setting, error))
}

/// `count` listeners on the same port with `SO_REUSEPORT`, one per worker: the kernel hands
/// each new connection to one of them, so no other worker is woken for it (with one shared
/// socket, every worker woke for every connection and all but one found nothing to accept).
/// With port 0 they share the port the first one got.
pub fn bind_reuseport_listeners(
    addr: std::net::SocketAddr,
    setting: &str,
    count: usize,
) -> std::io::Result<Vec<TcpListener>> {
    // Another process may join a port its sockets share with `SO_REUSEPORT` (two gateways,
    // each serving its own token set, the kernel splitting connections between them). A
    // socket without the option cannot bind where any listener is, so it shows whether the
    // port is free; then it makes way for the workers' sockets.
    let probe = listen_on(addr, false).map_err(|error| cannot_listen(addr, setting, error))?;
    let free = probe.local_addr()?;
    drop(probe);
    let first = listen_on(free, true).map_err(|error| cannot_listen(free, setting, error))?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners
            .push(listen_on(bound, true).map_err(|error| cannot_listen(bound, setting, error))?);
    }
    Ok(listeners)
}

/// Asks the kernel to hand each new connection to the listener of the CPU that took its
/// SYN (`SO_INCOMING_CPU`: listener `i` for `cpus[i]`); connections arriving on any other
/// CPU are hashed across the listeners as before. Worth it only when the worker of listener
/// `i` runs on `cpus[i]` alone. Linux 6.1 and later; older kernels take the option and
/// keep hashing.
pub fn steer_by_cpu(listeners: &[TcpListener], cpus: &[usize]) -> std::io::Result<()> {
    for (listener, &cpu) in listeners.iter().zip(cpus) {
        socket2::SockRef::from(listener)
            .set_cpu_affinity(cpu)
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot tie a listener to CPU {cpu} (SO_INCOMING_CPU): {error}"),
                )
            })?;
    }
    Ok(())
}

fn listen_on(addr: std::net::SocketAddr, reuseport: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn cannot_listen(
    addr: std::net::SocketAddr,
    setting: &str,
    error: std::io::Error,
) -> std::io::Error {
    std::io::Error::new(
        error.kind(),
        format!("cannot listen on {addr} ({setting}): {error}"),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reuseport_listeners_share_one_port_and_every_connection_is_accepted_once() {
        let listeners =
            bind_reuseport_listeners("127.0.0.1:0".parse().unwrap(), "TEST_ADDR", 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert!(
            listeners
                .iter()
                .all(|l| l.local_addr().unwrap().port() == port)
        );
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for listener in listeners {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while listener.accept().await.is_ok() {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        let mut clients = Vec::new();
        for _ in 0..30 {
            clients.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        for _ in 0..500 {
            if accepted.load(std::sync::atomic::Ordering::SeqCst) == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 30);
    }

    /// On loopback the kernel takes a connection's SYN on the CPU of the thread that calls
    /// `connect`: from a thread kept on one CPU, every connection must reach that CPU's
    /// listener (hashing would send about half of them to the other).
    #[tokio::test]
    async fn connections_reach_the_listener_of_the_cpu_their_handshake_ran_on() {
        let allowed = crate::allowed_cpus().unwrap();
        if allowed.len() < 2 {
            eprintln!("one CPU only: nothing to steer between (this machine has {allowed:?})");
            return;
        }
        let cpus = [allowed[0], allowed[1]];
        let listeners =
            bind_reuseport_listeners("127.0.0.1:0".parse().unwrap(), "TEST_ADDR", 2).unwrap();
        steer_by_cpu(&listeners, &cpus).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        for (index, &cpu) in cpus.iter().enumerate() {
            let clients = std::thread::spawn(move || {
                crate::pin_current_thread(cpu).unwrap();
                (0..20)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            for n in 0..clients.len() {
                let accepted =
                    tokio::time::timeout(Duration::from_secs(5), listeners[index].accept()).await;
                assert!(
                    accepted.is_ok(),
                    "connection {n} from CPU {cpu} did not reach listener {index}"
                );
            }
            let elsewhere =
                tokio::time::timeout(Duration::from_millis(50), listeners[1 - index].accept())
                    .await;
            assert!(
                elsewhere.is_err(),
                "a connection from CPU {cpu} reached the other listener"
            );
        }
    }

    #[tokio::test]
    async fn a_second_process_cannot_join_the_workers_port() {
        let first =
            bind_reuseport_listeners("127.0.0.1:0".parse().unwrap(), "VX11_GATEWAY_ADDR", 2)
                .unwrap();
        let second =
            bind_reuseport_listeners(first[0].local_addr().unwrap(), "VX11_GATEWAY_ADDR", 2)
                .unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse, "{second}");
        assert!(second.to_string().contains("VX11_GATEWAY_ADDR"), "{second}");
    }

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_a_clear_error() {
        let taken = bind_listener("127.0.0.1:0".parse().unwrap(), "OTHER").unwrap();
        let error = bind_reuseport_listeners(taken.local_addr().unwrap(), "VX11_GATEWAY_ADDR", 2)
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("cannot listen on") && message.contains("VX11_GATEWAY_ADDR"),
            "{message}"
        );
    }
}
