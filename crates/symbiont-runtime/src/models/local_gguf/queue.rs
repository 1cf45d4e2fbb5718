//! Admission to a worker's slots: a bounded queue, fair between agents.
//!
//! A request takes a slot at once when one is free and nobody waits;
//! otherwise it waits in its agent's line. A freed slot goes to the next
//! agent in turn (round-robin over the agents that wait), so one agent
//! with many requests cannot starve the others. A request whose deadline
//! passes while it waits leaves the queue and never runs; a full queue
//! refuses at once with its length and a hint of when to retry.
//!
//! The policy ([`Lines`]) is a plain struct; [`Admission`] adds the lock
//! and the waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Who waits: per agent, the waiters in arrival order, and the agents in
/// turn.
#[derive(Debug, Default)]
pub(super) struct Lines {
    by_agent: HashMap<String, VecDeque<u64>>,
    /// Agents with someone waiting; the front one is served next.
    turn: VecDeque<String>,
    waiting: usize,
}

impl Lines {
    /// Adds a waiter at the back of its agent's line.
    pub fn push(&mut self, agent: &str, waiter: u64) {
        let line = self.by_agent.entry(agent.to_string()).or_default();
        if line.is_empty() {
            self.turn.push_back(agent.to_string());
        }
        line.push_back(waiter);
        self.waiting += 1;
    }

    /// The next waiter: the first of the agent whose turn it is; that agent
    /// goes to the back of the turn.
    pub fn pop(&mut self) -> Option<u64> {
        let agent = self.turn.pop_front()?;
        let line = self.by_agent.get_mut(&agent)?;
        let waiter = line.pop_front();
        if line.is_empty() {
            self.by_agent.remove(&agent);
        } else {
            self.turn.push_back(agent);
        }
        if waiter.is_some() {
            self.waiting -= 1;
        }
        waiter
    }

    /// Takes a waiter out (it gave up); false if it was not waiting.
    pub fn remove(&mut self, agent: &str, waiter: u64) -> bool {
        let Some(line) = self.by_agent.get_mut(agent) else {
            return false;
        };
        let Some(at) = line.iter().position(|&w| w == waiter) else {
            return false;
        };
        line.remove(at);
        if line.is_empty() {
            self.by_agent.remove(agent);
            self.turn.retain(|a| a != agent);
        }
        self.waiting -= 1;
        true
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.waiting
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Refusal {
    /// The queue is full.
    Full {
        /// Requests waiting now.
        queued: usize,
        /// When a slot may be free, from the recent request times.
        retry_after: Duration,
    },
    /// The deadline passed while waiting.
    Deadline {
        /// How long it waited.
        waited: Duration,
    },
}

#[derive(Debug)]
struct State {
    free: usize,
    lines: Lines,
    grants: HashMap<u64, oneshot::Sender<()>>,
    next_waiter: u64,
    /// Mean time a slot is held (decaying), for the retry hint.
    mean_hold: Option<Duration>,
}

/// The slots of one worker and the queue in front of them.
#[derive(Debug)]
pub(super) struct Admission {
    slots: usize,
    /// Requests running or waiting at most.
    capacity: usize,
    state: Mutex<State>,
}

/// A slot, held from admission until the worker has finished the request
/// (its `Done` or `Failed` read); dropping it gives the slot to the next
/// waiter.
#[derive(Debug)]
pub(super) struct SlotPermit {
    admission: Arc<Admission>,
    since: Instant,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.admission.release(self.since.elapsed());
    }
}

impl Admission {
    /// `slots` requests run at once; `capacity` run or wait.
    pub fn new(slots: usize, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: slots.max(1),
            capacity: capacity.max(1),
            state: Mutex::new(State {
                free: slots.max(1),
                lines: Lines::default(),
                grants: HashMap::new(),
                next_waiter: 0,
                mean_hold: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent at every unlock: a panic elsewhere
        // does not poison its meaning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots busy and requests waiting, now.
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (self.slots - s.free, s.lines.len())
    }

    /// Waits for a slot in `agent`'s line until `deadline`.
    pub async fn acquire(
        self: &Arc<Self>,
        agent: &str,
        deadline: Instant,
    ) -> Result<SlotPermit, Refusal> {
        let arrived = Instant::now();
        let (id, rx) = {
            let mut s = self.lock();
            let busy = self.slots - s.free;
            if busy + s.lines.len() >= self.capacity {
                let hold = s.mean_hold.unwrap_or(Duration::from_secs(1));
                let rounds = (s.lines.len() / self.slots + 1) as u32;
                return Err(Refusal::Full {
                    queued: s.lines.len(),
                    retry_after: hold.saturating_mul(rounds),
                });
            }
            if s.free > 0 && s.lines.len() == 0 {
                s.free -= 1;
                return Ok(self.permit());
            }
            let id = s.next_waiter;
            s.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            s.lines.push(agent, id);
            s.grants.insert(id, tx);
            (id, rx)
        };
        let mut waiting = Waiting {
            admission: self.clone(),
            agent,
            id,
            granted: false,
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(())) => {
                waiting.granted = true;
                Ok(self.permit())
            }
            // Not reached: the sender is dropped only after sending.
            Ok(Err(_)) | Err(_) => Err(Refusal::Deadline {
                waited: arrived.elapsed(),
            }),
        }
    }

    fn permit(self: &Arc<Self>) -> SlotPermit {
        SlotPermit {
            admission: self.clone(),
            since: Instant::now(),
        }
    }

    /// A slot came free: to the next waiter, or back to the pool.
    fn release(&self, held: Duration) {
        let mut s = self.lock();
        s.mean_hold = Some(match s.mean_hold {
            Some(m) => (m * 7 + held) / 8,
            None => held,
        });
        if let Some(tx) = s.lines.pop().and_then(|next| s.grants.remove(&next)) {
            // Granted, received or not: a waiter that left meanwhile (its
            // receiver gone) finds itself out of its line when it drops,
            // and passes the slot on then. Never two grants for one slot.
            let _ = tx.send(());
            return;
        }
        s.free = (s.free + 1).min(self.slots);
    }
}

/// A request in the queue; leaving (its future dropped, or its deadline)
/// takes it out, and a slot granted in the meantime is passed on.
struct Waiting<'a> {
    admission: Arc<Admission>,
    agent: &'a str,
    id: u64,
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let granted_meanwhile = {
            let mut s = self.admission.lock();
            s.grants.remove(&self.id);
            !s.lines.remove(self.agent, self.id)
        };
        if granted_meanwhile {
            // The slot was handed to us as we left: pass it on (not a real
            // hold, so it does not count towards the mean).
            let mut s = self.admission.lock();
            if let Some(tx) = s.lines.pop().and_then(|next| s.grants.remove(&next)) {
                let _ = tx.send(());
                return;
            }
            s.free = (s.free + 1).min(self.admission.slots);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_take_turns() {
        let mut l = Lines::default();
        for w in 0..4 {
            l.push("busy", w);
        }
        l.push("quiet", 10);
        l.push("other", 20);
        // busy's first, then each other agent, then busy again.
        let order: Vec<u64> = std::iter::from_fn(|| l.pop()).collect();
        assert_eq!(order, [0, 10, 20, 1, 2, 3]);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_waiter_that_leaves_is_skipped() {
        let mut l = Lines::default();
        l.push("a", 1);
        l.push("b", 2);
        l.push("a", 3);
        assert!(l.remove("b", 2));
        assert!(!l.remove("b", 2));
        assert_eq!(l.len(), 2);
        assert_eq!(std::iter::from_fn(|| l.pop()).collect::<Vec<_>>(), [1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_a_late_request_never_runs() {
        let a = Admission::new(1, 3);
        let held = a.acquire("x", Instant::now()).await.unwrap();
        assert_eq!(a.load(), (1, 0));
        // One waits until its deadline and leaves without a slot.
        let deadline = Instant::now() + Duration::from_millis(100);
        let r = a.acquire("x", deadline).await;
        assert!(matches!(r, Err(Refusal::Deadline { .. })), "{r:?}");
        assert_eq!(a.load(), (1, 0));
        // Two wait; the third is refused at once with the queue's length.
        let far = Instant::now() + Duration::from_secs(60);
        let (a1, a2) = (a.clone(), a.clone());
        let w1 = tokio::spawn(async move { a1.acquire("x", far).await.map(|_| ()) });
        let w2 = tokio::spawn(async move { a2.acquire("y", far).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(a.load(), (1, 2));
        match a.acquire("z", far).await {
            Err(Refusal::Full { queued, .. }) => assert_eq!(queued, 2),
            other => panic!("{other:?}"),
        }
        drop(held);
        w1.await.unwrap().unwrap();
        w2.await.unwrap().unwrap();
        assert_eq!(a.load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_goes_to_the_next_agent_in_turn() {
        let a = Admission::new(1, 16);
        let held = a.acquire("busy", Instant::now()).await.unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (agent, n) in [("busy", 0), ("busy", 1), ("busy", 2), ("quiet", 0)] {
            let (a, tx) = (a.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let p = a.acquire(agent, far).await.unwrap();
                tx.send(format!("{agent}{n}")).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(s) = rx.recv().await {
            order.push(s);
        }
        assert_eq!(order, ["busy0", "quiet0", "busy1", "busy2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_as_it_is_granted_passes_the_slot_on() {
        let a = Admission::new(1, 16);
        let held = a.acquire("x", Instant::now()).await.unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let a1 = a.clone();
        let first = tokio::spawn(async move { a1.acquire("x", far).await.map(|_| ()) });
        tokio::task::yield_now().await;
        // Granted and aborted before it runs again.
        drop(held);
        first.abort();
        let _ = first.await;
        assert_eq!(a.load(), (0, 0), "the slot was lost");
        let p = a.acquire("y", Instant::now()).await;
        assert!(p.is_ok());
    }
}
