//! Egress for sandboxed programs and remote models: the one place where a
//! network destination is judged.
//!
//! - [`Policy`]: the profile's `allowed_destinations` (host name or
//!   address, optional port, optional protocol). A name is resolved here,
//!   and the connection goes to the address that was checked (no second
//!   lookup a rebinding DNS server could answer differently). Addresses
//!   that are not public (loopback, private, link-local and cloud metadata,
//!   multicast, …) are refused unless a rule names that address literally.
//! - [`Bucket`]: a token bucket in bytes per second, shared by every
//!   connection of one sandboxed process, one per direction.
//! - [`Proxy`]: an HTTP proxy (`CONNECT` tunnels and plain `http://`
//!   requests, one destination per connection) that asks the policy before
//!   connecting, never follows a redirect itself, and reports every refusal
//!   to an observer (the runtime's audit log) and to its counters.

mod bucket;
mod head;
mod policy;
mod proxy;
mod throttle;

pub use bucket::Bucket;
pub use head::{canonical_host, forward_head, parse_head, Head, Reject, Target};
pub use policy::{address_class, Kind, Policy, PolicyError, Refusal, Rule, RuleProtocol};
pub use proxy::{Observer, Proxy, ProxyStats, MAX_CONNECTIONS, MAX_PENDING};
pub use throttle::Throttle;
