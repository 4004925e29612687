//! The answer to a replicated write: DESIGN.md §3's table as one pure function of what each
//! backend did with the batch and of what validation refused.

use http::StatusCode;

use crate::http::error::RequestError;
use crate::params::Consistency;

/// What became of the batch for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend stored it.
    Acked,
    /// The backend stored the valid points and refused some (`partial write: … dropped=N`).
    AckedPartial(Vec<u8>),
    /// Appended (durably, per the fsync policy) to the backend's queue.
    Queued,
    /// The backend refused the batch with a client error (passed on when every backend that
    /// answered agrees); nothing stored or queued for it.
    Refused {
        status: StatusCode,
        message: Vec<u8>,
    },
    /// Not taken directly, and not queued because every backend that answered refused the
    /// write (the client gets that refusal; a queued copy would reach this backend alone).
    Withheld,
    /// Neither sent nor queued: why.
    Failed(String),
}

impl Outcome {
    pub fn is_acked(&self) -> bool {
        matches!(self, Self::Acked | Self::AckedPartial(_))
    }

    /// Points of the batch the backend did not store, when it answered and says how many
    /// (`dropped=N` ends InfluxDB's partial-write message).
    pub fn dropped(&self) -> Option<usize> {
        match self {
            Self::Acked => Some(0),
            Self::AckedPartial(message) => dropped_count(message),
            _ => None,
        }
    }

    /// Whether the batch will reach this backend without the client's help.
    pub fn is_stored(&self) -> bool {
        self.is_acked() || matches!(self, Self::Queued)
    }
}

/// Whether `outcomes` (so far) meet `consistency`: `any` needs one backend acked or queued, the
/// other levels count acknowledgements only.
pub fn level_met(consistency: Consistency, backends: usize, outcomes: &[&Outcome]) -> bool {
    match consistency {
        Consistency::Any => outcomes.iter().any(|o| o.is_stored()),
        level => outcomes.iter().filter(|o| o.is_acked()).count() >= level.required_acks(backends),
    }
}

/// The lines validation kept out of the batch, as InfluxDB would report them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// The whole error text InfluxDB 1.6 gives when the forwarded points are all stored.
    pub error: Option<Vec<u8>>,
    /// Points InfluxDB's storage layer drops (`time` as a key).
    pub dropped: usize,
    /// The storage layer's reason for those drops.
    pub drop_reason: Option<Vec<u8>>,
}

impl Refusals {
    pub fn of(v: &lineproto::Validated<'_>) -> Self {
        Refusals {
            error: v.influx_error(),
            dropped: v.dropped(),
            drop_reason: v.drop_reason().map(|r| {
                let mut out = Vec::new();
                r.write_to(&mut out);
                out
            }),
        }
    }
}

/// The answer to the client once every backend's outcome is known.
pub fn decide(
    consistency: Consistency,
    outcomes: &[Outcome],
    refused: &Refusals,
) -> Result<(), RequestError> {
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let acked = outcomes.iter().filter(|o| o.is_acked()).count();
    let queued = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Queued))
        .count();

    // Every backend that answered refused (the others could only queue): InfluxDB's own answer,
    // as one InfluxDB would give it. The others were withheld the write, or, where the refusal
    // came too late for that, queued it and are marked diverged.
    if acked == 0
        && let Some(Outcome::Refused { status, message }) = outcomes
            .iter()
            .find(|o| matches!(o, Outcome::Refused { .. }))
    {
        return Err(RequestError::Backend {
            status: *status,
            message: message.clone(),
        });
    }
    if acked == 0 && queued == 0 {
        let reasons: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Failed(why) => Some(why.as_str()),
                _ => None,
            })
            .collect();
        return Err(RequestError::Unavailable(format!(
            "write not stored: {}",
            if reasons.is_empty() {
                "no backend".to_owned()
            } else {
                reasons.join("; ")
            }
        )));
    }

    if !level_met(consistency, outcomes.len(), &all) {
        return Err(if acked > 0 {
            RequestError::LevelNotMet
        } else {
            RequestError::QueuedOnly
        });
    }

    // Backends that dropped different counts: the fewest is the client's answer (those that
    // dropped more than another backend are marked diverged).
    let backend_partial = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::AckedPartial(m) => Some(m.as_slice()),
            _ => None,
        })
        .min_by_key(|m| dropped_count(m).unwrap_or(usize::MAX));
    match (backend_partial, &refused.error) {
        (None, None) => Ok(()),
        (None, Some(ours)) => Err(RequestError::PartialWrite(ours.clone())),
        (Some(theirs), _) => Err(RequestError::PartialWrite(merge_partial(theirs, refused))),
    }
}

/// InfluxDB reports one storage-layer reason and the total of dropped points; parse errors are
/// not mentioned once the storage layer dropped something. Our `time`-key drops are checked
/// before the backend's own (type conflicts), as InfluxDB's storage layer does.
fn merge_partial(theirs: &[u8], refused: &Refusals) -> Vec<u8> {
    let Some(reason) = &refused.drop_reason else {
        return theirs.to_vec();
    };
    let their_dropped = dropped_count(theirs).unwrap_or(0);
    let mut out = b"partial write: ".to_vec();
    out.extend_from_slice(reason);
    out.extend_from_slice(format!(" dropped={}", refused.dropped + their_dropped).as_bytes());
    out
}

/// The `N` of the `dropped=N` that ends a partial-write message.
pub(crate) fn dropped_count(message: &[u8]) -> Option<usize> {
    let at = memchr::memmem::rfind(message, b"dropped=")?;
    std::str::from_utf8(&message[at + b"dropped=".len()..])
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_none() -> Refusals {
        Refusals::default()
    }

    fn failed() -> Outcome {
        Outcome::Failed("influx-a: queue full".to_owned())
    }

    #[test]
    fn dropped_points_are_read_from_partial_writes() {
        let partial = |m: &str| Outcome::AckedPartial(m.as_bytes().to_vec());
        assert_eq!(Outcome::Acked.dropped(), Some(0));
        assert_eq!(
            partial("partial write: field type conflict: input field \"v\" on measurement \"m\" is type float, already exists as type integer dropped=12").dropped(),
            Some(12)
        );
        assert_eq!(partial("partial write").dropped(), None);
        assert_eq!(Outcome::Queued.dropped(), None);
    }

    #[test]
    fn levels() {
        use Consistency::*;
        use Outcome::*;
        let cases: &[(Consistency, &[Outcome], bool)] = &[
            (Any, &[Queued, Queued], true),
            (One, &[Queued, Queued], false),
            (One, &[Acked, Queued], true),
            (Quorum, &[Acked, Queued, Queued], false),
            (Quorum, &[Acked, Acked, Queued], true),
            (All, &[Acked, Queued], false),
            (All, &[Acked, AckedPartial(b"x".to_vec())], true),
        ];
        for (level, outcomes, met) in cases {
            let all: Vec<&Outcome> = outcomes.iter().collect();
            assert_eq!(
                level_met(*level, outcomes.len(), &all),
                *met,
                "{level} {outcomes:?}"
            );
        }
    }

    #[test]
    fn answer_table() {
        use Outcome::*;
        let r = refused_none();
        assert_eq!(decide(Consistency::One, &[Acked, Queued], &r), Ok(()));
        assert_eq!(
            decide(Consistency::All, &[Acked, Queued], &r),
            Err(RequestError::LevelNotMet)
        );
        assert_eq!(
            decide(Consistency::One, &[Queued, Queued], &r),
            Err(RequestError::QueuedOnly)
        );
        assert_eq!(decide(Consistency::Any, &[Queued, failed()], &r), Ok(()));
        assert!(matches!(
            decide(Consistency::One, &[failed(), failed()], &r),
            Err(RequestError::Unavailable(_))
        ));
        let not_found = Refused {
            status: StatusCode::NOT_FOUND,
            message: b"database not found: \"x\"".to_vec(),
        };
        let passed_through = Err(RequestError::Backend {
            status: StatusCode::NOT_FOUND,
            message: b"database not found: \"x\"".to_vec(),
        });
        assert_eq!(
            decide(
                Consistency::One,
                &[not_found.clone(), not_found.clone()],
                &r
            ),
            passed_through
        );
        // A backend that could only queue does not turn the refusal into a success.
        for level in [Consistency::Any, Consistency::One, Consistency::All] {
            assert_eq!(
                decide(level, &[not_found.clone(), Queued], &r),
                passed_through
            );
        }
        // Once a backend stored it, the refusing one is settled apart (queued or diverged).
        assert_eq!(decide(Consistency::One, &[Acked, not_found], &r), Ok(()));
        // A full queue never blocks the answer once the level is met.
        assert_eq!(decide(Consistency::One, &[Acked, failed()], &r), Ok(()));
    }

    #[test]
    fn partial_writes_are_worded_as_influxdb_words_them() {
        use Outcome::*;
        let ours = Refusals {
            error: Some(b"partial write: unable to parse 'x': missing fields dropped=0".to_vec()),
            dropped: 0,
            drop_reason: None,
        };
        assert_eq!(
            decide(Consistency::One, &[Acked, Acked], &ours),
            Err(RequestError::PartialWrite(
                ours.error.clone().unwrap_or_default()
            ))
        );
        let theirs = b"partial write: field type conflict: input field \"v\" on measurement \"m\" is type float, already exists as type integer dropped=1".to_vec();
        // Parse errors are not mentioned once storage dropped points, as in 1.6.
        assert_eq!(
            decide(
                Consistency::One,
                &[AckedPartial(theirs.clone()), Acked],
                &ours
            ),
            Err(RequestError::PartialWrite(theirs.clone()))
        );
        let time_drop = Refusals {
            error: Some(b"partial write: invalid tag key: input tag \"time\" on measurement \"m\" is invalid dropped=2".to_vec()),
            dropped: 2,
            drop_reason: Some(b"invalid tag key: input tag \"time\" on measurement \"m\" is invalid".to_vec()),
        };
        assert_eq!(
            decide(Consistency::One, &[AckedPartial(theirs), Acked], &time_drop),
            Err(RequestError::PartialWrite(
                b"partial write: invalid tag key: input tag \"time\" on measurement \"m\" is invalid dropped=3".to_vec()
            ))
        );
    }

    #[test]
    fn backends_that_dropped_different_counts_answer_with_the_fewest() {
        use Outcome::*;
        let conflict = |n: usize| {
            format!("partial write: field type conflict: input field \"v\" on measurement \"m\" is type float, already exists as type integer dropped={n}").into_bytes()
        };
        let none = Refusals {
            error: None,
            dropped: 0,
            drop_reason: None,
        };
        for outcomes in [
            [AckedPartial(conflict(2)), AckedPartial(conflict(1))],
            [AckedPartial(conflict(1)), AckedPartial(conflict(2))],
        ] {
            assert_eq!(
                decide(Consistency::All, &outcomes, &none),
                Err(RequestError::PartialWrite(conflict(1)))
            );
        }
    }
}
