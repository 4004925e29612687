//! Crash points for the process-kill tests. Compiled to nothing outside `cfg(test)`.
//!
//! A child test process started with `HANDOFF_FAILPOINT=<name>:<n>` aborts (no unwinding, no
//! destructors, no flush) the `n`-th time it reaches the point `<name>`.

#[cfg(test)]
pub(crate) fn hit(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("HANDOFF_FAILPOINT").ok()?;
        let (n, c) = v.rsplit_once(':')?;
        Some((n.to_owned(), c.parse().ok()?))
    });
    if let Some((n, c)) = spec
        && n == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *c
    {
        std::process::abort();
    }
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
