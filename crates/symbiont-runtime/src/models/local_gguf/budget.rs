//! The host's budget for loaded workers: memory, cores, how many.
//!
//! Before a worker starts it takes a [`Lease`] for its estimated memory and
//! its threads; the lease holds CPUs of its own (workers never share one:
//! oversubscribed llama.cpp threads collapse throughput) and lives as long
//! as the worker. When the budget is full, idle workers are evicted, least
//! recently used first, and the start waits until their leases are
//! returned; when only busy workers hold it, the start waits for one to go
//! idle (or its deadline); a worker that could never fit is refused at once
//! with the numbers.
//!
//! The decision ([`Ledger::decide`]) is plain data and a clock, testable
//! without processes; [`Budget`] adds the lock, the waiting and eviction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::models::{ResourceLimit, SlmRunnerError};

/// What the host grants the workers together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBudget {
    /// Memory for all workers, MB (their estimated needs add up to at
    /// most this).
    pub memory_mb: u64,
    /// CPUs granted, as many as the process may run on by default.
    pub cores: u32,
    /// Workers loaded at once.
    pub max_workers: usize,
}

impl HostBudget {
    /// The config's `[slm.pool]`, with the host's defaults where it is
    /// silent.
    pub fn from_settings(settings: &crate::config::PoolSettings) -> Self {
        let host = Self::from_host();
        let cores = settings.cores.unwrap_or(host.cores).max(1);
        Self {
            memory_mb: settings.memory_budget_mb.unwrap_or(host.memory_mb),
            cores,
            max_workers: settings.max_loaded_workers.unwrap_or(cores as usize),
        }
    }

    /// Half of the machine's physical memory, every CPU this process may
    /// run on, as many workers as those cores hold.
    pub fn from_host() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        Self {
            memory_mb: physical_memory_mb().map_or(4096, |m| m / 2),
            cores,
            max_workers: cores as usize,
        }
    }
}

/// `MemTotal` from `/proc/meminfo`, MB.
pub fn physical_memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// One loaded worker in the ledger.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub need_mb: u64,
    /// First CPU (index into the granted ones) and how many.
    pub first_cpu: u32,
    pub cpus: u32,
    pub idle: bool,
    /// Never evicted (a pinned model).
    pub pinned: bool,
    /// Asked to go; its room is on its way back.
    pub evicting: bool,
    pub last_used: Instant,
}

/// What the budget says to a worker that wants to start.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// It fits: at this first CPU.
    Fits { first_cpu: u32 },
    /// It fits once these idle workers are gone (least recently used
    /// first).
    Evict(Vec<u64>),
    /// Busy workers hold the room: wait for one to finish.
    Wait,
    /// It can never fit.
    Never(String),
}

/// The leases in force: a plain struct.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub held: BTreeMap<u64, Held>,
}

impl Ledger {
    /// Where a worker needing `need_mb` and `cpus` CPUs would go.
    pub fn decide(&self, budget: &HostBudget, need_mb: u64, cpus: u32) -> Decision {
        if need_mb > budget.memory_mb {
            return Decision::Never(format!(
                "a worker needs about {need_mb} MB resident, more than the host budget's {} MB (`slm.pool.memory_budget_mb`, default half of the physical memory); set it to {need_mb} or more",
                budget.memory_mb
            ));
        }
        if cpus > budget.cores {
            return Decision::Never(format!(
                "a worker needs {cpus} core(s), more than the host budget's {} (`slm.pool.cores`); lower the profile's max_cpu_cores or the model's settings.threads to {}",
                budget.cores, budget.cores
            ));
        }
        if budget.max_workers == 0 {
            return Decision::Never(
                "the host budget allows no worker (`slm.pool.max_loaded_workers` = 0)".into(),
            );
        }
        let used: u64 = self.held.values().map(|h| h.need_mb).sum();
        let fits_memory = |freed: u64| used - freed + need_mb <= budget.memory_mb;
        let fits_count = |gone: usize| self.held.len() - gone < budget.max_workers;
        if fits_memory(0) && fits_count(0) {
            if let Some(first_cpu) = self.free_cpus(budget.cores, cpus, &[]) {
                return Decision::Fits { first_cpu };
            }
        }
        // Workers already asked to go count as gone: if that is enough,
        // wait for them rather than evict more.
        let mut leaving: Vec<u64> = Vec::new();
        let mut freed = 0;
        for (id, h) in self.held.iter().filter(|(_, h)| h.evicting) {
            leaving.push(*id);
            freed += h.need_mb;
        }
        let fits = |gone: &[u64], freed: u64| {
            fits_memory(freed)
                && fits_count(gone.len())
                && self.free_cpus(budget.cores, cpus, gone).is_some()
        };
        if !leaving.is_empty() && fits(&leaving, freed) {
            return Decision::Wait;
        }
        // Evict idle workers, least recently used first, until it fits.
        let mut idle: Vec<(&u64, &Held)> = self
            .held
            .iter()
            .filter(|(_, h)| h.idle && !h.pinned && !h.evicting)
            .collect();
        idle.sort_by_key(|(_, h)| h.last_used);
        let mut gone = leaving;
        let mut victims = Vec::new();
        for (id, h) in idle {
            gone.push(*id);
            victims.push(*id);
            freed += h.need_mb;
            if fits(&gone, freed) {
                return Decision::Evict(victims);
            }
        }
        Decision::Wait
    }

    /// The first run of `n` CPUs no lease holds (leases in `ignore` do not
    /// count).
    fn free_cpus(&self, cores: u32, n: u32, ignore: &[u64]) -> Option<u32> {
        let mut taken = vec![false; cores as usize];
        for (id, h) in &self.held {
            if ignore.contains(id) {
                continue;
            }
            for c in h.first_cpu..(h.first_cpu + h.cpus).min(cores) {
                taken[c as usize] = true;
            }
        }
        (0..=cores.saturating_sub(n)).find(|&first| (first..first + n).all(|c| !taken[c as usize]))
    }
}

type Evict = Box<dyn Fn() + Send + Sync>;

struct State {
    ledger: Ledger,
    evict: BTreeMap<u64, Evict>,
    next: u64,
}

/// The budget, shared by every runner that draws on it.
pub struct Budget {
    limits: HostBudget,
    state: Mutex<State>,
    changed: Notify,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A worker's share of the budget, returned when dropped.
#[derive(Debug)]
pub(super) struct Lease {
    budget: Arc<Budget>,
    id: u64,
    pub first_cpu: u32,
    idle: AtomicBool,
}

impl Budget {
    /// A budget with these limits.
    pub fn new(limits: HostBudget) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State {
                ledger: Ledger::default(),
                evict: BTreeMap::new(),
                next: 0,
            }),
            changed: Notify::new(),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &HostBudget {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Workers holding a lease and their estimated memory, MB.
    pub fn in_use(&self) -> (usize, u64) {
        let s = self.lock();
        (
            s.ledger.held.len(),
            s.ledger.held.values().map(|h| h.need_mb).sum(),
        )
    }

    /// Takes room for a worker needing `need_mb` and `cpus` CPUs, evicting
    /// idle workers or waiting until `deadline` as needed.
    pub(super) async fn lease(
        self: &Arc<Self>,
        need_mb: u64,
        cpus: u32,
        pinned: bool,
        deadline: Instant,
    ) -> Result<Lease, SlmRunnerError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut s = self.lock();
                match s.ledger.decide(&self.limits, need_mb, cpus) {
                    Decision::Fits { first_cpu } => {
                        let id = s.next;
                        s.next += 1;
                        s.ledger.held.insert(
                            id,
                            Held {
                                need_mb,
                                first_cpu,
                                cpus,
                                idle: false,
                                pinned,
                                evicting: false,
                                last_used: Instant::now(),
                            },
                        );
                        return Ok(Lease {
                            budget: self.clone(),
                            id,
                            first_cpu,
                            idle: AtomicBool::new(false),
                        });
                    }
                    Decision::Evict(victims) => {
                        for v in victims {
                            if let Some(evict) = s.evict.get(&v) {
                                tracing::debug!(lease = v, "evicting an idle worker for room");
                                evict();
                            }
                            // Leaving: not chosen twice, and its room
                            // counts as coming.
                            if let Some(h) = s.ledger.held.get_mut(&v) {
                                h.evicting = true;
                            }
                        }
                    }
                    Decision::Wait => {}
                    Decision::Never(why) => {
                        return Err(SlmRunnerError::ResourceLimitExceeded {
                            limit: ResourceLimit::Memory,
                            detail: why,
                        })
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let (workers, mb) = self.in_use();
                return Err(SlmRunnerError::ResourceLimitExceeded {
                    limit: ResourceLimit::Memory,
                    detail: format!(
                        "no room for a worker of about {need_mb} MB and {cpus} core(s) before the deadline: {workers} busy worker(s) hold {mb} of {} MB and the cores",
                        self.limits.memory_mb
                    ),
                });
            }
        }
    }
}

impl Lease {
    /// How to unload this lease's worker when its room is needed (it is
    /// asked only while idle).
    pub fn on_evict(&self, evict: impl Fn() + Send + Sync + 'static) {
        self.budget.lock().evict.insert(self.id, Box::new(evict));
    }

    /// The worker went idle (nothing runs) or busy.
    pub fn set_idle(&self, idle: bool) {
        if self.idle.swap(idle, Ordering::AcqRel) == idle {
            return;
        }
        {
            let mut s = self.budget.lock();
            if let Some(h) = s.ledger.held.get_mut(&self.id) {
                h.idle = idle;
                h.last_used = Instant::now();
            }
        }
        if idle {
            // A waiting start may now evict it.
            self.budget.changed.notify_waiters();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut s = self.budget.lock();
            s.ledger.held.remove(&self.id);
            s.evict.remove(&self.id);
        }
        self.budget.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(memory_mb: u64, cores: u32, max_workers: usize) -> HostBudget {
        HostBudget {
            memory_mb,
            cores,
            max_workers,
        }
    }

    fn held(need_mb: u64, first_cpu: u32, cpus: u32, idle: bool, age: u64) -> Held {
        Held {
            need_mb,
            first_cpu,
            cpus,
            idle,
            pinned: false,
            evicting: false,
            last_used: Instant::now() - std::time::Duration::from_secs(age),
        }
    }

    #[tokio::test]
    async fn fits_evicts_the_least_recently_used_idle_waits_or_refuses() {
        let b = budget(1000, 4, 3);
        let mut l = Ledger::default();
        // Empty: fits at CPU 0.
        assert_eq!(l.decide(&b, 400, 2), Decision::Fits { first_cpu: 0 });
        l.held.insert(1, held(400, 0, 2, true, 30));
        // Next to it: CPUs 2–3.
        assert_eq!(l.decide(&b, 400, 2), Decision::Fits { first_cpu: 2 });
        l.held.insert(2, held(400, 2, 2, true, 10));
        // No CPU left: the older idle one goes.
        assert_eq!(l.decide(&b, 100, 1), Decision::Evict(vec![1]));
        // Memory: 800 used, 300 more does not fit; evicting the oldest
        // frees enough.
        assert_eq!(l.decide(&b, 300, 1), Decision::Evict(vec![1]));
        // Both busy: wait.
        l.held.get_mut(&1).unwrap().idle = false;
        l.held.get_mut(&2).unwrap().idle = false;
        assert_eq!(l.decide(&b, 300, 1), Decision::Wait);
        // One asked to go already: wait for its room, evict nothing more.
        l.held.get_mut(&1).unwrap().evicting = true;
        l.held.get_mut(&2).unwrap().idle = true;
        assert_eq!(l.decide(&b, 300, 1), Decision::Wait);
        l.held.get_mut(&1).unwrap().evicting = false;
        l.held.get_mut(&2).unwrap().idle = false;
        // Larger than the whole budget: never.
        assert!(matches!(l.decide(&b, 1001, 1), Decision::Never(_)));
        assert!(matches!(l.decide(&b, 10, 5), Decision::Never(_)));
    }

    #[tokio::test]
    async fn the_worker_count_is_a_limit_too() {
        let b = budget(10_000, 8, 2);
        let mut l = Ledger::default();
        l.held.insert(1, held(100, 0, 1, false, 5));
        l.held.insert(2, held(100, 1, 1, true, 5));
        assert_eq!(l.decide(&b, 100, 1), Decision::Evict(vec![2]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_waits_for_room_and_gets_it_when_one_is_returned() {
        let b = Budget::new(budget(1000, 2, 4));
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let first = b.lease(600, 1, false, far).await.unwrap();
        assert_eq!(first.first_cpu, 0);
        // Busy and in the way: a second start waits, then times out with
        // the numbers.
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        match b.lease(600, 1, false, soon).await {
            Err(SlmRunnerError::ResourceLimitExceeded { detail, .. }) => {
                assert!(detail.contains("1000 MB"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // Once idle, it is evicted for the next start.
        let evicted = Arc::new(AtomicBool::new(false));
        let flag = evicted.clone();
        first.on_evict(move || flag.store(true, Ordering::SeqCst));
        first.set_idle(true);
        let b2 = b.clone();
        let next =
            tokio::spawn(async move { b2.lease(600, 1, false, far).await.map(|l| l.first_cpu) });
        tokio::task::yield_now().await;
        assert!(
            evicted.load(Ordering::SeqCst),
            "the idle worker was not asked to go"
        );
        drop(first);
        assert_eq!(next.await.unwrap().unwrap(), 0);
        assert_eq!(b.in_use(), (0, 0));
    }
}
