//! Long-lived threads for background chunk loads.
//!
//! A cold sequential read starts a load for nearly every chunk (about 850
//! per GiB), each a network round trip that blocks its thread. A thread
//! per load paid a spawn, a fresh stack and its page faults every time;
//! here up to [`cache::MAX_PREFETCH`] threads take loads from a queue and
//! stay for the next, leaving after [`IDLE_EXIT`] without work, so an idle
//! mount holds none.

use super::{cache, lock};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a loader waits for work before its thread ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);

type Load = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Load>,
    threads: usize,
    idle: usize,
    closed: bool,
}

#[derive(Default)]
pub struct Loaders {
    state: Mutex<State>,
    wake: Condvar,
}

impl Loaders {
    /// Runs `load` on a loader thread. Gives it back when none is free and
    /// no thread can start, or after [`Loaders::close`] (the load is then
    /// dropped unrun by the caller).
    pub fn run(self: &Arc<Self>, load: Load) -> Result<(), Load> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(load);
        }
        // A new thread only when no idle one is left for this load; at the
        // bound the load waits for a busy one (the cache never has more
        // than MAX_PREFETCH loads claimed).
        if st.idle <= st.queue.len() && st.threads < cache::MAX_PREFETCH {
            let me = self.clone();
            match std::thread::Builder::new().name("prefetch".into()).spawn(move || me.work()) {
                Ok(_) => st.threads += 1,
                Err(e) if st.threads == 0 => {
                    tracing::debug!(cause = %e, "no prefetch thread");
                    return Err(load);
                }
                // The running threads will get to it.
                Err(_) => {}
            }
        }
        st.queue.push_back(load);
        self.wake.notify_one();
        Ok(())
    }

    /// Ends the threads once the queue is empty (the drive is going away).
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    fn work(self: Arc<Self>) {
        let mut st = lock(&self.state);
        loop {
            if let Some(load) = st.queue.pop_front() {
                drop(st);
                // A load that panics must not take the thread's place with it.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).is_err() {
                    tracing::error!("a background chunk load panicked");
                }
                st = lock(&self.state);
                continue;
            }
            if st.closed {
                break;
            }
            st.idle += 1;
            let (next, waited) = self.wake.wait_timeout(st, IDLE_EXIT).unwrap_or_else(|p| p.into_inner());
            st = next;
            st.idle -= 1;
            if waited.timed_out() && st.queue.is_empty() {
                break;
            }
        }
        st.threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_load_on_few_threads_and_refuses_after_close() {
        let loaders = Arc::new(Loaders::default());
        let done = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
        for _ in 0..200 {
            let (done, threads) = (done.clone(), threads.clone());
            let queued = loaders.run(Box::new(move || {
                lock(&threads).insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(1));
                done.fetch_add(1, Ordering::SeqCst);
            }));
            assert!(queued.is_ok());
        }
        let waited = |what: &str, ok: &dyn Fn() -> bool| {
            // A bound only so that a bug fails rather than hangs.
            for _ in 0..12_000 {
                if ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("{what} never happened");
        };
        waited("every load ran", &|| done.load(Ordering::SeqCst) == 200);
        let used = lock(&threads).len();
        assert!(used <= cache::MAX_PREFETCH, "{used} threads for 200 loads");
        assert!(lock(&loaders.state).threads <= cache::MAX_PREFETCH);
        loaders.close();
        assert!(loaders.run(Box::new(|| {})).is_err(), "a closed pool takes no load");
        // Every thread leaves once closed.
        waited("every thread left", &|| lock(&loaders.state).threads == 0);
    }
}
