//! The shutdown signal every listener and stream watches.

use tokio_util::sync::CancellationToken;

/// Cancelled on SIGTERM or SIGINT. Streams watch it to end themselves.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels on the first SIGTERM or SIGINT.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            token.cancel();
        });
        Ok(())
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub async fn triggered(&self) {
        self.0.cancelled().await
    }

    pub fn token(&self) -> &CancellationToken {
        &self.0
    }
}
