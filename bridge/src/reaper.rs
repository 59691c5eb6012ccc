//! Deferred, batched deletion of detached veths. Deleting one veth costs the
//! kernel one RCU grace period (about 20 ms here) per request; deleting all
//! links of a link group in one request costs about 0.5 ms each. A leave
//! therefore only takes the veth down and moves it into [`GROUP`]; this
//! thread deletes the group shortly after (within a second), and once more
//! when the driver is dropped, so a one-shot process leaves nothing behind.

use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cnm_netns::Handle;

/// The link group detached veths wait in ("cnm" in ASCII).
pub const GROUP: u32 = 0x00636e6d;

/// How long deletions are gathered before one request deletes them all.
const GATHER: Duration = Duration::from_millis(25);

enum Msg {
    Delete(Arc<Handle>),
    Stop,
}

pub(crate) struct Reaper {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts the thread; an error when the system cannot start one.
    pub(crate) fn start() -> std::io::Result<Reaper> {
        let (tx, rx) = channel::<Msg>();
        let thread = std::thread::Builder::new().name("cnm-bridge-reaper".into()).spawn(move || {
            let mut pending: HashMap<*const Handle, Arc<Handle>> = HashMap::new();
            loop {
                let first = rx.recv().ok();
                let mut stop = false;
                match first {
                    Some(Msg::Delete(h)) => {
                        pending.insert(Arc::as_ptr(&h), h);
                    }
                    Some(Msg::Stop) | None => stop = true,
                }
                // Gather what else arrives meanwhile.
                if !stop {
                    loop {
                        match rx.recv_timeout(GATHER) {
                            Ok(Msg::Delete(h)) => {
                                pending.insert(Arc::as_ptr(&h), h);
                            }
                            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                                stop = true;
                                break;
                            }
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                    }
                }
                for (_, h) in pending.drain() {
                    if let Err(e) = h.link_del_group(GROUP) {
                        if e.kind() != cnm_netns::ErrorKind::NotFound {
                            tracing::warn!("deleting detached veths: {e}");
                        }
                    }
                }
                if stop {
                    // Anything queued after the stop request, too.
                    while let Ok(Msg::Delete(h)) = rx.try_recv() {
                        let _ = h.link_del_group(GROUP);
                    }
                    return;
                }
            }
        })?;
        Ok(Reaper { tx, thread: Some(thread) })
    }

    /// Deletes the group in `h`'s namespace soon.
    pub(crate) fn schedule(&self, h: Arc<Handle>) {
        let _ = self.tx.send(Msg::Delete(h));
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
