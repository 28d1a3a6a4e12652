//! The per-client budget of new routes: a decision or report that would create a route
//! takes one token of its client's budget; a route that exists takes none.
//!
//! The client is the `X-Atrion-Client` header when there is one (as proxy mode's bans key
//! it), else the peer's IP address. Clients are kept in [`CLIENT_BUCKETS`] buckets by a
//! randomly keyed hash, each a token bucket (`governor`'s keyed limiter): memory is bounded
//! whatever the number of client keys a caller makes up; two clients that fall in one bucket
//! share its budget.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How many buckets client keys are hashed into.
pub const CLIENT_BUCKETS: u64 = 65_536;

/// The header naming the client.
pub const CLIENT_HEADER: &str = "x-atrion-client";

/// [`CLIENT_HEADER`] as a header name, made once (a lookup by `&str` parses the name).
const CLIENT: axum::http::HeaderName = axum::http::HeaderName::from_static(CLIENT_HEADER);

/// Who is asking: read from the request, hashed only when a route would be created.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    header: Option<HeaderValue>,
    peer: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client {
            header: parts.headers.get(CLIENT).cloned(),
            peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        })
    }
}

impl Client {
    /// The client's key hashed with `hasher`: its header when there is one, else its
    /// address (what other per-client bounds key it by too).
    pub(crate) fn hash_with(&self, hasher: &foldhash::fast::RandomState) -> u64 {
        match (&self.header, self.peer) {
            (Some(h), _) => hasher.hash_one((0u8, h.as_bytes())),
            (None, Some(peer)) => hasher.hash_one((1u8, peer.ip())),
            (None, None) => 0,
        }
    }
}

/// The budgets of new routes, per client.
pub(crate) struct RouteCreation {
    limiter: Option<DefaultKeyedRateLimiter<u64>>,
    hasher: foldhash::fast::RandomState,
    clock: DefaultClock,
}

impl RouteCreation {
    /// `per_second` new routes per client, in bursts of up to `burst`; a rate of 0: no
    /// limit.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        RouteCreation { limiter, hasher: foldhash::fast::RandomState::default(), clock: DefaultClock::default() }
    }

    /// Takes one new route of `client`'s budget, or says when one will be there.
    pub(crate) fn take(&self, client: &Client) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let bucket = self.bucket(client);
        // (The limiter's map holds at most `CLIENT_BUCKETS` keys: it needs no pruning.)
        limiter.check_key(&bucket).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn bucket(&self, client: &Client) -> u64 {
        let hash = match (&client.header, client.peer) {
            (Some(h), _) => self.hasher.hash_one((0u8, h.as_bytes())),
            (None, Some(peer)) => self.hasher.hash_one((1u8, peer.ip())),
            (None, None) => 0,
        };
        hash % CLIENT_BUCKETS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> Client {
        Client { header: Some(HeaderValue::from_str(name).unwrap()), peer: None }
    }

    #[test]
    fn each_client_has_its_own_budget() {
        let c = RouteCreation::new(1, 3);
        for _ in 0..3 {
            assert!(c.take(&client("a")).is_ok());
        }
        let wait = c.take(&client("a")).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(c.take(&client("b")).is_ok(), "another client is not affected");
        let peer = Client { header: None, peer: Some("127.0.0.2:9".parse().unwrap()) };
        assert!(c.take(&peer).is_ok());
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let c = RouteCreation::new(0, 0);
        for _ in 0..1_000 {
            assert!(c.take(&client("a")).is_ok());
        }
    }
}
