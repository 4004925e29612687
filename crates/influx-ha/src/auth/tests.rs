use std::time::Duration;

use http::HeaderValue;
use http::header::AUTHORIZATION;

use super::password::{MIN_ITERATIONS, token_hash_string};
use super::*;

fn authenticator() -> Authenticator {
    let users = [User {
        name: "telegraf".to_owned(),
        password_hash: PasswordHash::new(b"s3cret", MIN_ITERATIONS).expect("hash"),
    }];
    let tokens = [Token {
        name: "grafana".to_owned(),
        digest: password::parse_token_hash(&token_hash_string(b"tok-abc")).expect("hash"),
    }];
    Authenticator::new(&users, &tokens)
}

fn header(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
    h
}

fn basic(user: &str, password: &str) -> HeaderMap {
    header(&format!(
        "Basic {}",
        base64::encode(format!("{user}:{password}").as_bytes(), true)
    ))
}

#[tokio::test]
async fn accepts_every_way_of_presenting_good_credentials() {
    let a = authenticator();
    let none = HeaderMap::new();
    let ok = |r: Result<Principal, AuthError>| r.expect("accepted").name.to_string();
    assert_eq!(
        ok(a.authenticate(&none, Some("u=telegraf&p=s3cret")).await),
        "telegraf"
    );
    assert_eq!(
        ok(a.authenticate(&basic("telegraf", "s3cret"), None).await),
        "telegraf"
    );
    assert_eq!(
        ok(a.authenticate(&header("Token telegraf:s3cret"), None).await),
        "telegraf"
    );
    assert_eq!(
        ok(a.authenticate(&header("Token tok-abc"), None).await),
        "grafana"
    );
    assert_eq!(a.failures(), 0);
}

#[tokio::test]
async fn refusals_carry_influxdb_texts() {
    let a = authenticator();
    let none = HeaderMap::new();
    let cases: Vec<(HeaderMap, Option<&str>, AuthError)> = vec![
        (none.clone(), None, AuthError::Unparsable),
        (none.clone(), Some("u=telegraf"), AuthError::Unparsable),
        (none.clone(), Some("u=telegraf&p=wrong"), AuthError::Failed),
        (none.clone(), Some("u=nobody&p=s3cret"), AuthError::Failed),
        (basic("telegraf", "wrong"), None, AuthError::Failed),
        (basic("", "s3cret"), None, AuthError::UsernameRequired),
        (header("Basic !!!"), None, AuthError::Unparsable),
        (header("Bearer x.y.z"), None, AuthError::BearerDisabled),
        (header("Token nope"), None, AuthError::Failed),
        (header("Token telegraf:wrong"), None, AuthError::Failed),
        // Good header, bad parameters: the parameters win, as in 1.6.
        (
            basic("telegraf", "s3cret"),
            Some("u=telegraf&p=bad"),
            AuthError::Failed,
        ),
    ];
    let n = cases.len() as u64;
    for (headers, query, want) in cases {
        assert_eq!(
            a.authenticate(&headers, query).await,
            Err(want),
            "{query:?} {headers:?}"
        );
    }
    assert_eq!(a.failures(), n);
    assert_eq!(
        AuthError::Unparsable.to_string(),
        "unable to parse authentication credentials"
    );
    assert_eq!(AuthError::BearerDisabled.to_string(), "bearer auth disabld");
}

#[tokio::test]
async fn verification_results_are_remembered_without_the_password() {
    let a = authenticator();
    let none = HeaderMap::new();
    for _ in 0..3 {
        assert!(
            a.authenticate(&none, Some("u=telegraf&p=s3cret"))
                .await
                .is_ok()
        );
        assert!(
            a.authenticate(&none, Some("u=telegraf&p=nope"))
                .await
                .is_err()
        );
    }
    let cache = a.cache.lock().expect("not poisoned");
    let (matched, refused) = (&cache.matched, &cache.refused);
    assert_eq!(
        (matched.len(), refused.len()),
        (1, 1),
        "one entry per (user, password) pair"
    );
    for key in matched.iter().chain(refused) {
        assert!(
            !key.windows(6).any(|w| w == b"s3cret"),
            "the memory holds HMACs, not passwords"
        );
    }
}

#[tokio::test]
async fn a_password_for_another_user_does_not_match() {
    let users = [
        User {
            name: "a".to_owned(),
            password_hash: PasswordHash::new(b"pa", MIN_ITERATIONS).expect("hash"),
        },
        User {
            name: "b".to_owned(),
            password_hash: PasswordHash::new(b"pb", MIN_ITERATIONS).expect("hash"),
        },
    ];
    let a = Authenticator::new(&users, &[]);
    let none = HeaderMap::new();
    assert!(a.authenticate(&none, Some("u=a&p=pa")).await.is_ok());
    assert_eq!(
        a.authenticate(&none, Some("u=b&p=pa")).await,
        Err(AuthError::Failed)
    );
    assert!(a.authenticate(&none, Some("u=b&p=pb")).await.is_ok());
}

#[tokio::test]
async fn wrong_passwords_never_evict_the_right_ones_from_memory() {
    let a = Authenticator::new(&[], &[]);
    let right = a.cache_key_of("telegraf", b"s3cret");
    remember(&a.cache, right, true);
    for i in 0..CACHE_ENTRIES + 10 {
        let wrong = a.cache_key_of("telegraf", format!("guess {i}").as_bytes());
        remember(&a.cache, wrong, false);
    }
    assert_eq!(a.remembered(&right), Some(true));
    assert_eq!(a.remembered(&a.cache_key_of("telegraf", b"guess 0")), None);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_get_a_verification_slot_is_told_to_retry() {
    let users = [User {
        name: "telegraf".to_owned(),
        password_hash: PasswordHash::new(b"s3cret", MIN_ITERATIONS).expect("hash"),
    }];
    let a = Authenticator::new(&users, &[]);
    // Every slot is taken by verifications that do not end.
    let _held = a
        .verify_slots
        .clone()
        .acquire_many_owned(VERIFY_CONCURRENCY as u32)
        .await
        .expect("slots");
    let none = HeaderMap::new();
    assert_eq!(
        a.authenticate(&none, Some("u=telegraf&p=s3cret")).await,
        Err(AuthError::Busy)
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_keeps_its_slot_until_its_hash_is_done() {
    // Slow enough that the request is gone long before its hash is done.
    let users = [User {
        name: "telegraf".to_owned(),
        password_hash: PasswordHash::new(b"s3cret", 600_000).expect("hash"),
    }];
    let a = Arc::new(Authenticator::new(&users, &[]));
    let check = tokio::spawn({
        let a = a.clone();
        async move {
            a.authenticate(&HeaderMap::new(), Some("u=telegraf&p=guess"))
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.verify_slots.available_permits() == VERIFY_CONCURRENCY {
        assert!(tokio::time::Instant::now() < deadline, "the check starts");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    check.abort();
    let key = a.cache_key_of("telegraf", b"guess");
    loop {
        // Read in this order: the outcome is recorded before the slot is given back.
        let free = a.verify_slots.available_permits();
        if let Some(ok) = a.remembered(&key) {
            assert!(!ok);
            break;
        }
        assert!(
            free < VERIFY_CONCURRENCY,
            "the slot was freed before the hash ended"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outcome is recorded"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_reload_with_the_same_users_keeps_what_was_remembered() {
    let users = [User {
        name: "telegraf".to_owned(),
        password_hash: PasswordHash::new(b"s3cret", MIN_ITERATIONS).expect("hash"),
    }];
    let old = Authenticator::new(&users, &[]);
    let none = HeaderMap::new();
    assert!(
        old.authenticate(&none, Some("u=telegraf&p=s3cret"))
            .await
            .is_ok()
    );

    let mut same = Authenticator::new(&users, &[]);
    same.take_over_from(&old);
    assert_eq!(
        same.remembered(&same.cache_key_of("telegraf", b"s3cret")),
        Some(true)
    );
    // A new password hash for the user: what was remembered no longer holds.
    let changed_users = [User {
        name: "telegraf".to_owned(),
        password_hash: PasswordHash::new(b"other", MIN_ITERATIONS).expect("hash"),
    }];
    let mut changed = Authenticator::new(&changed_users, &[]);
    changed.take_over_from(&old);
    assert_eq!(
        changed.remembered(&changed.cache_key_of("telegraf", b"s3cret")),
        None
    );
    assert_eq!(
        changed
            .authenticate(&none, Some("u=telegraf&p=s3cret"))
            .await,
        Err(AuthError::Failed)
    );
    // Either way the checks share one bound with those still running on the old one.
    assert!(Arc::ptr_eq(&changed.verify_slots, &old.verify_slots));
    assert!(Arc::ptr_eq(&same.verify_slots, &old.verify_slots));
}
