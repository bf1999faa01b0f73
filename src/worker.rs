//! A thread that runs a node's background loop until its handle is dropped: the prover, the repairer and the
//! storage-node registry's refresher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A running background loop; stops it and waits for it when dropped.
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Runs `body` on a thread of its own. `body` is given the stop flag and returns soon after it reads true.
    pub fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || body(&stop))
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
