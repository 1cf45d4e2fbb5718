//! Concurrency limits: requests in progress over every agent and per
//! agent. A request over either limit is refused at once (429), before it
//! reaches a model's queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The service's two limits.
#[derive(Debug)]
pub struct Limits {
    global: Arc<Semaphore>,
    global_max: usize,
    per_agent: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_agent_max: usize,
}

/// Held while a request is in progress (for a stream: until it ends).
#[derive(Debug)]
pub struct Permit {
    _global: OwnedSemaphorePermit,
    _agent: OwnedSemaphorePermit,
}

impl Limits {
    /// Limits of `global` requests in all and `per_agent` per agent.
    pub fn new(global: usize, per_agent: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global)),
            global_max: global,
            per_agent: Mutex::new(HashMap::new()),
            per_agent_max: per_agent,
        }
    }

    /// A permit for one request of `agent`, or 429.
    pub fn admit(&self, agent: &str) -> Result<Permit, ApiError> {
        let agent_sem = {
            let mut map = self.per_agent.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(agent.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_agent_max)))
                .clone()
        };
        let agent_permit = agent_sem.try_acquire_owned().map_err(|_| {
            ApiError::too_many(
                "agent_concurrency_limit",
                format!(
                    "agent `{agent}` already has {} requests in progress (slm.service.max_concurrent_per_agent)",
                    self.per_agent_max
                ),
                1,
            )
        })?;
        let global_permit = self.global.clone().try_acquire_owned().map_err(|_| {
            ApiError::too_many(
                "concurrency_limit",
                format!(
                    "the service already has {} requests in progress (slm.service.max_concurrent_requests)",
                    self.global_max
                ),
                1,
            )
        })?;
        Ok(Permit {
            _global: global_permit,
            _agent: agent_permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_agent_and_global_limits_refuse_and_free() {
        let limits = Limits::new(3, 2);
        let a1 = limits.admit("a").unwrap();
        let _a2 = limits.admit("a").unwrap();
        let e = limits.admit("a").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (429, "agent_concurrency_limit")
        );
        assert_eq!(e.retry_after, Some(1));
        let _b1 = limits.admit("b").unwrap();
        let e = limits.admit("b").unwrap_err();
        assert_eq!(e.code, "concurrency_limit");
        drop(a1);
        limits.admit("b").unwrap();
    }
}
