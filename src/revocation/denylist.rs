//! The in-process deny list every request is checked against: a map of
//! revoked `jti`s and a map of revoked subjects per issuer. Lookups take a
//! read lock and allocate nothing; an empty list costs one atomic load.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

use super::{Revocation, issued_before_time, subject};

/// Expired entries are swept after this many insertions.
const SWEEP_EVERY: usize = 1024;

#[derive(Debug, Default)]
struct Tokens {
    /// jti -> keep until (seconds since the epoch).
    by_jti: HashMap<Box<str>, i64>,
    inserted: usize,
}

/// A subject's revocation: tokens issued before `before` are refused.
#[derive(Debug, Clone, Copy)]
struct SubjectEntry {
    before: f64,
    until: Option<i64>,
}

#[derive(Debug, Default)]
struct Subjects {
    /// issuer name -> sub -> entry.
    by_issuer: HashMap<Box<str>, HashMap<Box<str>, SubjectEntry>>,
    inserted: usize,
}

/// Revoked tokens and subjects known to this replica.
#[derive(Debug, Default)]
pub struct DenyList {
    any: AtomicBool,
    tokens: RwLock<Tokens>,
    subjects: RwLock<Subjects>,
}

impl DenyList {
    /// Adds a revocation. Applying the same one twice is harmless, and a
    /// subject keeps the latest `issued_before` it was given.
    pub fn apply(&self, revocation: &Revocation) {
        let now = now();
        if revocation.until().is_some_and(|u| u <= now) {
            return;
        }
        match revocation {
            Revocation::Token { jti, .. } => {
                let until = revocation.until().unwrap_or(i64::MAX);
                let mut t = self.tokens.write().unwrap_or_else(|p| p.into_inner());
                let slot = t.by_jti.entry(jti.as_str().into()).or_insert(until);
                *slot = (*slot).max(until);
                t.inserted += 1;
                if t.inserted % SWEEP_EVERY == 0 {
                    t.by_jti.retain(|_, until| *until > now);
                }
            }
            Revocation::Subject {
                issuer,
                sub,
                issued_before,
                until,
            } => {
                let mut s = self.subjects.write().unwrap_or_else(|p| p.into_inner());
                let entry = s
                    .by_issuer
                    .entry(issuer.as_str().into())
                    .or_default()
                    .entry(sub.as_str().into())
                    .or_insert(SubjectEntry {
                        before: *issued_before,
                        until: *until,
                    });
                // The later cutoff and the longer keep: a later revocation
                // never shortens an earlier one (none means for good).
                entry.before = entry.before.max(*issued_before);
                entry.until = match (entry.until, *until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                s.inserted += 1;
                if s.inserted % SWEEP_EVERY == 0 {
                    for subs in s.by_issuer.values_mut() {
                        subs.retain(|_, e| e.until.is_none_or(|u| u > now));
                    }
                }
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// True when a token of `issuer` with `claims` is revoked.
    pub fn is_revoked(&self, issuer: &str, claims: &Map<String, Value>) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let now = now();
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            let t = self.tokens.read().unwrap_or_else(|p| p.into_inner());
            if t.by_jti.get(jti).is_some_and(|until| *until > now) {
                return true;
            }
        }
        if let Some(sub) = subject(claims) {
            let s = self.subjects.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = s.by_issuer.get(issuer).and_then(|subs| subs.get(&*sub)) {
                return e.until.is_none_or(|u| u > now) && issued_before_time(claims, e.before);
            }
        }
        false
    }

    /// Copies every entry of `older` into this list (a reload that changes
    /// `revocation:` builds a new list: nothing revoked may be forgotten).
    pub fn carry_over(&self, older: &DenyList) {
        if !older.any.load(Ordering::Acquire) {
            return;
        }
        {
            let from = older.tokens.read().unwrap_or_else(|p| p.into_inner());
            let mut to = self.tokens.write().unwrap_or_else(|p| p.into_inner());
            for (jti, until) in &from.by_jti {
                let slot = to.by_jti.entry(jti.clone()).or_insert(*until);
                *slot = (*slot).max(*until);
            }
        }
        {
            let from = older.subjects.read().unwrap_or_else(|p| p.into_inner());
            let mut to = self.subjects.write().unwrap_or_else(|p| p.into_inner());
            for (issuer, subs) in &from.by_issuer {
                let into = to.by_issuer.entry(issuer.clone()).or_default();
                for (sub, e) in subs {
                    let entry = into.entry(sub.clone()).or_insert(*e);
                    entry.before = entry.before.max(e.before);
                    entry.until = match (entry.until, e.until) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// Entries held (tokens, subjects), expired ones not yet swept included.
    pub fn entries(&self) -> (usize, usize) {
        let t = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let s = self.subjects.read().unwrap_or_else(|p| p.into_inner());
        (t.by_jti.len(), s.by_issuer.values().map(HashMap::len).sum())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_revoked_jti_is_refused_for_every_issuer_and_others_pass() {
        let list = DenyList::default();
        let t = claims(json!({"jti": "a", "sub": "alice", "iat": 10}));
        assert!(!list.is_revoked("corp", &t));
        list.apply(&Revocation::Token {
            jti: "a".into(),
            expires_at: now() + 60,
        });
        assert!(list.is_revoked("corp", &t));
        assert!(list.is_revoked("partners", &t));
        assert!(!list.is_revoked("corp", &claims(json!({"jti": "b"}))));
    }

    #[test]
    fn a_long_expired_jti_is_not_kept() {
        let list = DenyList::default();
        list.apply(&Revocation::Token {
            jti: "old".into(),
            expires_at: now() - 2 * super::super::KEPT_AFTER_EXPIRY,
        });
        assert_eq!(list.entries(), (0, 0));
    }

    #[test]
    fn subject_revocation_covers_older_tokens_and_tokens_without_iat_only() {
        let list = DenyList::default();
        list.apply(&Revocation::Subject {
            issuer: "corp".into(),
            sub: "alice".into(),
            issued_before: 100.0,
            until: None,
        });
        assert!(list.is_revoked("corp", &claims(json!({"sub": "alice", "iat": 99}))));
        assert!(list.is_revoked("corp", &claims(json!({"sub": "alice"}))));
        assert!(!list.is_revoked("corp", &claims(json!({"sub": "alice", "iat": 100}))));
        assert!(!list.is_revoked("partners", &claims(json!({"sub": "alice", "iat": 1}))));
        assert!(!list.is_revoked("corp", &claims(json!({"sub": "bob", "iat": 1}))));
        list.apply(&Revocation::Subject {
            issuer: "corp".into(),
            sub: "4711".into(),
            issued_before: 100.0,
            until: None,
        });
        assert!(
            list.is_revoked("corp", &claims(json!({"sub": 4711, "iat": 99}))),
            "a numeric sub matches by its decimal text"
        );
    }

    #[test]
    fn a_later_subject_revocation_never_shortens_an_earlier_one() {
        let list = DenyList::default();
        let at = |before: f64, until: Option<i64>| Revocation::Subject {
            issuer: "corp".into(),
            sub: "alice".into(),
            issued_before: before,
            until,
        };
        list.apply(&at(100.0, None));
        list.apply(&at(200.0, Some(now() - 1 + 2)));
        let old = claims(json!({"sub": "alice", "iat": 150}));
        assert!(list.is_revoked("corp", &old));
        let kept = |list: &DenyList| {
            let s = list.subjects.read().unwrap();
            s.by_issuer["corp"]["alice"].until
        };
        assert_eq!(
            kept(&list),
            None,
            "the first revocation kept alice out for good; the second must not end that"
        );
        let copy = DenyList::default();
        copy.carry_over(&list);
        assert!(copy.is_revoked("corp", &old), "carried over whole");
        assert_eq!(kept(&copy), None);
    }

    #[test]
    fn a_subject_keeps_the_latest_cutoff() {
        let list = DenyList::default();
        let at = |t: f64| Revocation::Subject {
            issuer: "corp".into(),
            sub: "alice".into(),
            issued_before: t,
            until: None,
        };
        list.apply(&at(200.0));
        list.apply(&at(100.0));
        assert!(list.is_revoked("corp", &claims(json!({"sub": "alice", "iat": 150}))));
    }
}
