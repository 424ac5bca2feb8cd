//! A TCP forwarder from a loopback address to an address on the node (the gateway Service's
//! NodePort), so that `make run` serves the gateway at `http://127.0.0.1:8000` as the README
//! says, as kind's port mapping does.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// Forwards every connection to `listen` to `target` until dropped.
#[derive(Debug)]
pub struct Forwarder {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::io(
                format!("listening on {listen} (is something else using it?)"),
                e,
            )
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Ok(Self { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
