//! Any body: no panic; the fast path agrees with the ported parser; what is forwarded validates
//! again to the same points.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lineproto::{Precision, validate, validate_reference};

fuzz_target!(|data: &[u8]| {
    let Some((&p, body)) = data.split_first() else {
        return;
    };
    let precision = Precision::from_v1_param(["n", "u", "ms", "s", "m", "h"][usize::from(p % 6)]);
    let now = 1_700_000_000_123_456_789;
    let v = validate(body, precision, now);
    let reference = validate_reference(body, precision, now);
    assert_eq!(v.points(), reference.points());
    assert_eq!(v.rejected(), reference.rejected());
    assert_eq!(v.output(), reference.output());
    let again = validate(v.output(), precision, now + 1);
    assert_eq!(again.points(), v.points());
    assert!(again.is_unchanged());
});
