//! What stands before every endpoint that does work: authentication ([`crate::auth`]) and
//! the removal of client credentials before a request goes further.
//!
//! As influxd 1.6 does, the router answers first: `/ping`, `/health`, `OPTIONS`, unknown paths
//! (404) and wrong methods (405) need no credentials; `/write`, `/api/v2/write`,
//! `/api/v1/prom/write`, `/query`, `/api/v2/query`, `/api/v1/prom/read` and the admin surface
//! do (on the separate admin listener too, unless `[auth] admin_listener = false`).
//!
//! Rate limits (`[http] rate_limit`, main listener only) are taken here too: per address
//! before the credentials are checked (a client guessing passwords is slowed down as well),
//! per user after. See [`super::limit`].
//!
//! Whatever the outcome, the request that goes on carries no `Authorization` header and no
//! `u`/`p` query parameters: handlers cannot forward, log or queue what they never see. The
//! authenticated [`Principal`] travels in the request's extensions.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{Request, Uri};

use super::error::RequestError;
use super::limit::{ClientKey, RateLimiter, retry_after_secs};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::config::{RateLimit, RateLimitKey};

/// The address of the client a request came from (set by the server in the request's
/// extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Where a request arrived, for deciding what it must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The InfluxDB API (also the admin surface when it shares the main listener).
    Main,
    /// The separate admin listener.
    AdminListener,
}

/// Authentication settings and state shared by every listener; cheap to clone. The default
/// enforces nothing (authentication off) but still strips client credentials.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

#[derive(Debug, Default)]
struct GuardInner {
    /// `None`: authentication is off. Swapped whole by [`Guard::set_auth`] (config reload).
    auth: ArcSwapOption<AuthSettings>,
    /// `None`: no rate limit. Swapped whole by [`Guard::set_rate_limit`].
    limiter: ArcSwapOption<RateLimiter>,
    /// Refusals counted by authenticators that a reload replaced.
    replaced_failures: std::sync::atomic::AtomicU64,
}

/// What `[auth]` asks for.
#[derive(Debug)]
pub struct AuthSettings {
    /// The users and tokens.
    pub authenticator: Authenticator,
    /// Whether the separate admin listener asks for credentials too.
    pub admin_listener: bool,
    /// The users and tokens that may use the admin API; `None`: every one.
    pub admins: Option<std::collections::HashSet<String>>,
}

impl Guard {
    /// A guard enforcing `auth` (`None`: authentication off).
    pub fn new(auth: Option<AuthSettings>) -> Self {
        let guard = Self::default();
        guard.set_auth(auth);
        guard
    }

    /// Replaces the authentication settings (for a config reload); requests already past the
    /// check are not affected.
    pub fn set_auth(&self, mut auth: Option<AuthSettings>) {
        if let (Some(new), Some(old)) = (auth.as_mut(), self.inner.auth.load().as_ref()) {
            new.authenticator.take_over_from(&old.authenticator);
        }
        if let Some(old) = self.inner.auth.swap(auth.map(Arc::new)) {
            // A request still checking with the old one may count after this: a refusal or
            // two of a reload's moment may go uncounted, never counted twice.
            self.inner.replaced_failures.fetch_add(
                old.authenticator.failures(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Replaces the rate limit (for a config reload); a new limit starts with full buckets,
    /// an unchanged one keeps them.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        let current = self.inner.limiter.load();
        if current.as_ref().map(|l| l.limit) == limit {
            return;
        }
        self.inner
            .limiter
            .store(limit.map(|l| Arc::new(RateLimiter::new(l))));
    }

    /// Whether authentication is on.
    pub fn auth_enabled(&self) -> bool {
        self.inner.auth.load().is_some()
    }

    /// Requests refused for their credentials since start.
    pub fn auth_failures(&self) -> u64 {
        let current = self
            .inner
            .auth
            .load()
            .as_ref()
            .map_or(0, |a| a.authenticator.failures());
        self.inner
            .replaced_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            + current
    }

    /// [`Guard::admit`] for the admin surface: the admin API (`/admin/…`) is refused (403) to
    /// an authenticated user or token that `[auth] admins` does not name. The status page,
    /// `/status`, `/metrics` and the peers' queue reports are for every one: a peer's
    /// `[[peer]]` user left out of `admins` must not blind the read path. A notice from such a
    /// user is marked [`crate::peers::UntrustedNotice`]: it makes the peers be polled, and its
    /// report (which could steer reads) is not taken.
    pub async fn admit_admin<B>(
        &self,
        entry: Entry,
        req: Request<B>,
    ) -> Result<Request<B>, RequestError> {
        let mut req = self.admit(entry, req).await?;
        let path = req.uri().path();
        if !path.starts_with(crate::admin::API_PREFIX) {
            return Ok(req);
        }
        let auth = self.inner.auth.load();
        let admins = auth.as_ref().and_then(|a| a.admins.as_ref());
        let refused = match (admins, req.extensions().get::<Principal>()) {
            (Some(admins), Some(p)) if !admins.contains(&*p.name) => p.name.clone(),
            _ => return Ok(req),
        };
        match path {
            crate::peers::QUEUES_PATH => Ok(req),
            crate::peers::CHANGED_PATH => {
                req.extensions_mut().insert(crate::peers::UntrustedNotice);
                Ok(req)
            }
            _ => Err(RequestError::Forbidden(format!(
                "{refused} may not use the admin API: [auth] admins does not name it"
            ))),
        }
    }

    /// Checks a request for an endpoint that does work and strips its credentials; `Err` is
    /// the answer (401 as 1.6 words it).
    pub async fn admit<B>(
        &self,
        entry: Entry,
        req: Request<B>,
    ) -> Result<Request<B>, RequestError> {
        let limiter = match entry {
            Entry::Main => self.inner.limiter.load_full(),
            Entry::AdminListener => None,
        };
        let addr = req.extensions().get::<ClientAddr>().map(|a| a.0.ip());
        if let (Some(l), Some(addr)) = (&limiter, addr)
            && l.limit.per == RateLimitKey::Address
        {
            take(l, ClientKey::Addr(addr))?;
        }
        let auth = self.inner.auth.load_full();
        let principal = match auth {
            Some(auth) if entry == Entry::Main || auth.admin_listener => Some(
                auth.authenticator
                    .authenticate(req.headers(), req.uri().query())
                    .await
                    .map_err(|e| match e {
                        AuthError::Busy => RequestError::Overloaded(e.to_string()),
                        e => RequestError::Unauthorized(e),
                    })?,
            ),
            _ => None,
        };
        if let Some(l) = limiter.filter(|l| l.limit.per == RateLimitKey::User) {
            match (&principal, addr) {
                (Some(p), _) => take(&l, ClientKey::User(p.name.clone()))?,
                (None, Some(addr)) => take(&l, ClientKey::Addr(addr))?,
                (None, None) => {}
            }
        }
        let mut req = strip_credentials(req);
        if let Some(p) = principal {
            req.extensions_mut().insert::<Principal>(p);
        }
        Ok(req)
    }
}

fn take(limiter: &RateLimiter, key: ClientKey) -> Result<(), RequestError> {
    limiter
        .take(key, std::time::Instant::now())
        .map_err(|wait| RequestError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        })
}

/// Removes `Authorization` and the `u`/`p` query parameters.
pub fn strip_credentials<B>(mut req: Request<B>) -> Request<B> {
    req.headers_mut().remove(AUTHORIZATION);
    let Some(query) = req.uri().query() else {
        return req;
    };
    let Some(kept) = without_credentials(query) else {
        return req;
    };
    let path = req.uri().path();
    let pq = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse::<PathAndQuery>() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// The query without its `u` and `p` pairs (compared after decoding, as Go reads keys), or
/// `None` when it has none. Other pairs are kept byte for byte, joined with `&`.
fn without_credentials(query: &str) -> Option<String> {
    let is_credential = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let decoded = super::query::QueryParams::parse(Some(&format!("{key}=1")));
        decoded.non_empty("u").is_some() || decoded.non_empty("p").is_some()
    };
    let mut out = String::with_capacity(query.len());
    let mut removed = false;
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let pair = &rest[..end];
        if !pair.is_empty() && is_credential(pair) {
            removed = true;
        } else if !pair.is_empty() {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(pair);
        }
        if end == rest.len() {
            break;
        }
        rest = &rest[end + 1..];
    }
    removed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_query() {
        assert_eq!(
            without_credentials("db=x&u=a&p=b&rp=y").as_deref(),
            Some("db=x&rp=y")
        );
        assert_eq!(without_credentials("u=a;p=b").as_deref(), Some(""));
        assert_eq!(without_credentials("%75=a&db=x").as_deref(), Some("db=x"));
        assert_eq!(without_credentials("db=x&q=u%3D1"), None);
        assert_eq!(without_credentials("db=x&user=a"), None);
    }

    #[test]
    fn requests_lose_their_credentials() {
        let req = Request::builder()
            .uri("http://h/write?db=x&u=admin&p=secret&precision=s")
            .header(AUTHORIZATION, "Basic YWRtaW46c2VjcmV0")
            .body(())
            .expect("request");
        let req = strip_credentials(req);
        assert_eq!(req.uri().to_string(), "http://h/write?db=x&precision=s");
        assert!(req.headers().get(AUTHORIZATION).is_none());
        let req = strip_credentials(
            Request::builder()
                .uri("/query?p=secret")
                .body(())
                .expect("request"),
        );
        assert_eq!(req.uri().to_string(), "/query");
    }
}
