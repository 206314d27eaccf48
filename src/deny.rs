//! This replica's deny list: the subjects and upstream sessions revoked recently, and
//! from when. A bearer token (or a session) of a revoked subject that was issued at or
//! before the revocation is refused (`revoked`) until the entry lapses; one issued
//! later passes (a re-enabled user signs in afresh).
//!
//! Why a list in memory: the check runs on every request, so it must cost nothing when
//! nobody is revoked (one atomic load) and a hash lookup otherwise, never a store round
//! trip. `crate::revocation` fills it: from its own revocations at once, from the other
//! replicas' through the session store (publish/subscribe, with a poll behind it).
//!
//! It knows identities and refusals only; who revokes, and how replicas learn of it,
//! is `crate::revocation`'s business.

use crate::identity::Identity;
use crate::refusal::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};

/// What a deny entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Key {
    /// A global `{provider}:{subject}` sub.
    Subject(String),
    /// An upstream session: (provider id, its `sid`).
    Session(String, String),
    /// A subject whose group memberships were cut (a SCIM mover, `crate::scim`): its
    /// bearer tokens issued at or before the change carry groups it no longer holds and
    /// are refused; its sessions are not (they read their groups from the SCIM store).
    Claims(String),
    /// A person named by a verified email address at a provider: (provider id, the
    /// address as `crate::session::email_key_part` makes it). Refuses sessions and bearer
    /// tokens of that provider whose identity carries the address, verified, whichever
    /// subject they name (a Shared Signals event with an `email` subject).
    Email(String, String),
    /// Not a deny entry: a subject whose group memberships grew. Nothing is refused;
    /// each replica drops its cached lookups of the subject so its next request reads
    /// the new groups (`crate::revocation` handles it; [`DenyList::apply`] ignores it).
    Refresh(String),
}

/// One revocation as every replica learns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: Key,
    /// When it was revoked (seconds since the epoch): credentials issued at or before
    /// this second are refused.
    pub at: i64,
    /// When the entry lapses (seconds): no credential issued before `at` is accepted
    /// after this anyway (`at` + the longest token lifetime accepted).
    pub until: i64,
}

/// (revoked at, lapses at), seconds.
type Span = (i64, i64);

/// The entries, laid out so the per-request lookup borrows the identity's strings
/// (no allocation): subjects by sub, upstream sessions by provider, then `sid`.
#[derive(Default)]
struct Entries {
    subjects: HashMap<String, Span>,
    sessions: HashMap<String, HashMap<String, Span>>,
    /// Subjects whose bearer tokens' groups are stale (`Key::Claims`).
    claims: HashMap<String, Span>,
    /// Verified addresses by provider, then lower-cased address (`Key::Email`).
    emails: HashMap<String, HashMap<String, Span>>,
}

impl Entries {
    fn slot(&mut self, key: &Key) -> Option<&mut Span> {
        const NONE: Span = (i64::MIN, i64::MIN);
        match key {
            Key::Subject(s) => Some(self.subjects.entry(s.clone()).or_insert(NONE)),
            Key::Session(p, sid) => Some(self.sessions.entry(p.clone()).or_default().entry(sid.clone()).or_insert(NONE)),
            Key::Claims(s) => Some(self.claims.entry(s.clone()).or_insert(NONE)),
            Key::Email(p, e) => Some(self.emails.entry(p.clone()).or_default().entry(e.clone()).or_insert(NONE)),
            Key::Refresh(_) => None,
        }
    }

    fn len(&self) -> usize {
        let nested = |m: &HashMap<String, HashMap<String, Span>>| m.values().map(HashMap::len).sum::<usize>();
        self.subjects.len() + self.claims.len() + nested(&self.sessions) + nested(&self.emails)
    }
}

/// The entries of one replica.
pub struct DenyList {
    /// Set while `entries` may be non-empty: the per-request check reads only this.
    any: AtomicBool,
    entries: RwLock<Entries>,
}

impl Default for DenyList {
    fn default() -> Self {
        DenyList { any: AtomicBool::new(false), entries: RwLock::new(Entries::default()) }
    }
}

impl DenyList {
    /// Adds (or extends) an entry; true when it was news (the caller then drops caches).
    pub fn apply(&self, e: &Entry, now: i64) -> bool {
        if e.until <= now || matches!(e.key, Key::Refresh(_)) {
            return false;
        }
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let Some((at, until)) = map.slot(&e.key) else { return false };
        let news = e.at > *at || e.until > *until;
        (*at, *until) = ((*at).max(e.at), (*until).max(e.until));
        self.any.store(true, Ordering::Release);
        news
    }

    /// Drops lapsed entries (called by the poll, about once a second).
    pub fn prune(&self, now: i64) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        map.subjects.retain(|_, (_, until)| *until > now);
        map.claims.retain(|_, (_, until)| *until > now);
        let map = &mut *map;
        for nested in [&mut map.sessions, &mut map.emails] {
            nested.retain(|_, inner| {
                inner.retain(|_, (_, until)| *until > now);
                !inner.is_empty()
            });
        }
        if map.len() == 0 {
            self.any.store(false, Ordering::Release);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Err(Revoked)` when `identity`'s subject or upstream session was revoked at or
    /// after `issued_at` (a credential without an issue time counts as issued before
    /// any revocation: fail closed), or, for a bearer token (`bearer`), when the
    /// subject's group memberships were cut since (`Key::Claims`).
    pub fn check(&self, identity: &Identity, issued_at: Option<i64>, now: i64, bearer: bool) -> Result<(), Refusal> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let hit = |span: Option<&Span>| span.is_some_and(|(at, until)| *until > now && issued_at.is_none_or(|iat| iat <= *at));
        if hit(map.subjects.get(identity.sub.as_str())) {
            return Err(Refusal::Revoked);
        }
        if bearer && hit(map.claims.get(identity.sub.as_str())) {
            return Err(Refusal::Revoked);
        }
        if let Some(sid) = &identity.session_id {
            if hit(map.sessions.get(identity.provider.as_str()).and_then(|m| m.get(sid.as_str()))) {
                return Err(Refusal::Revoked);
            }
        }
        if let Some(by_email) = map.emails.get(identity.provider.as_str()) {
            if let Some(email) = verified_email(identity) {
                if hit(by_email.get(email.as_ref())) {
                    return Err(Refusal::Revoked);
                }
            }
        }
        Ok(())
    }
}

/// The identity's address as email entries are keyed, when its provider says it is
/// verified; borrowed when it is already lower case (the common case).
pub fn verified_email(identity: &Identity) -> Option<std::borrow::Cow<'_, str>> {
    if identity.email_verified != Some(true) {
        return None;
    }
    let e = identity.email.as_deref()?.trim();
    if e.chars().any(|c| c.is_uppercase()) {
        Some(std::borrow::Cow::Owned(e.to_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(e))
    }
}

static LIST: LazyLock<DenyList> = LazyLock::new(DenyList::default);

/// This process's deny list (it outlives configuration reloads).
pub fn list() -> &'static DenyList {
    &LIST
}

/// The per-request check of a bearer token against this process's list.
pub fn check(identity: &Identity, issued_at: Option<i64>) -> Result<(), Refusal> {
    check_with(identity, issued_at, true)
}

/// The per-request check of a browser session (created at `created_at`): a group
/// change (`Key::Claims`) does not end it, the session reads its groups afresh.
pub fn check_session(identity: &Identity, created_at: i64) -> Result<(), Refusal> {
    check_with(identity, Some(created_at), false)
}

fn check_with(identity: &Identity, issued_at: Option<i64>, bearer: bool) -> Result<(), Refusal> {
    let l = list();
    if !l.any.load(Ordering::Acquire) {
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    l.check(identity, issued_at, now, bearer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Population, ProviderKind};

    fn alice() -> Identity {
        let mut id = Identity::new("wf", ProviderKind::Oidc, Population::Workforce, "alice".into());
        id.session_id = Some("op-sid-1".into());
        id
    }

    #[test]
    fn empty_list_admits_everything() {
        let l = DenyList::default();
        assert_eq!(l.check(&alice(), None, 100, true), Ok(()));
    }

    #[test]
    fn credentials_issued_up_to_the_revocation_are_refused_until_the_entry_lapses() {
        let l = DenyList::default();
        assert!(l.apply(&Entry { key: Key::Subject("wf:alice".into()), at: 1_000, until: 2_000 }, 1_000));
        assert!(!l.apply(&Entry { key: Key::Subject("wf:alice".into()), at: 1_000, until: 2_000 }, 1_000), "not news twice");
        let cases = [
            ("issued before", Some(990), 1_001, Err(Refusal::Revoked)),
            ("same second", Some(1_000), 1_001, Err(Refusal::Revoked)),
            ("no iat: fail closed", None, 1_001, Err(Refusal::Revoked)),
            ("issued after", Some(1_001), 1_002, Ok(())),
            ("entry lapsed", Some(990), 2_000, Ok(())),
        ];
        for (name, iat, now, want) in cases {
            assert_eq!(l.check(&alice(), iat, now, true), want, "{name}");
        }
        let mut bob = alice();
        bob.sub = "wf:bob".into();
        bob.session_id = None;
        assert_eq!(l.check(&bob, Some(990), 1_001, true), Ok(()), "another user untouched");
        l.prune(2_000);
        assert!(l.is_empty());
        assert_eq!(l.check(&alice(), Some(990), 1_001, true), Ok(()));
    }

    #[test]
    fn an_upstream_session_entry_refuses_only_that_session() {
        let l = DenyList::default();
        l.apply(&Entry { key: Key::Session("wf".into(), "op-sid-1".into()), at: 1_000, until: 2_000 }, 1_000);
        assert_eq!(l.check(&alice(), Some(990), 1_001, true), Err(Refusal::Revoked));
        let mut other = alice();
        other.session_id = Some("op-sid-2".into());
        assert_eq!(l.check(&other, Some(990), 1_001, true), Ok(()));
        let mut elsewhere = alice();
        elsewhere.provider = "cu".into();
        assert_eq!(l.check(&elsewhere, Some(990), 1_001, true), Ok(()), "a sid is per provider");
    }

    #[test]
    fn a_claims_entry_refuses_old_bearer_tokens_but_not_sessions_and_refresh_is_never_kept() {
        let l = DenyList::default();
        assert!(!l.apply(&Entry { key: Key::Refresh("wf:alice".into()), at: 1_000, until: 2_000 }, 1_000), "refresh is no entry");
        assert!(l.is_empty());
        assert!(l.apply(&Entry { key: Key::Claims("wf:alice".into()), at: 1_000, until: 2_000 }, 1_000));
        assert_eq!(l.check(&alice(), Some(990), 1_001, true), Err(Refusal::Revoked), "a token with the old groups");
        assert_eq!(l.check(&alice(), Some(1_001), 1_002, true), Ok(()), "a token issued after the change");
        assert_eq!(l.check(&alice(), Some(990), 1_001, false), Ok(()), "a session reads its groups afresh");
        l.prune(2_000);
        assert!(l.is_empty());
    }

    #[test]
    fn an_email_entry_refuses_the_verified_address_at_that_provider_only() {
        let l = DenyList::default();
        assert!(l.apply(&Entry { key: Key::Email("wf".into(), "ann@corp.test".into()), at: 1_000, until: 2_000 }, 1_000));
        let mut ann = alice();
        ann.email = Some("Ann@Corp.test".into());
        assert_eq!(l.check(&ann, Some(990), 1_001, true), Ok(()), "verification unknown: not the address");
        ann.email_verified = Some(false);
        assert_eq!(l.check(&ann, Some(990), 1_001, true), Ok(()), "unverified: not the address");
        ann.email_verified = Some(true);
        assert_eq!(l.check(&ann, Some(990), 1_001, true), Err(Refusal::Revoked), "any case");
        assert_eq!(l.check(&ann, Some(990), 1_001, false), Err(Refusal::Revoked), "sessions too");
        assert_eq!(l.check(&ann, Some(1_001), 1_002, true), Ok(()), "issued after");
        let mut elsewhere = ann.clone();
        elsewhere.provider = "cu".into();
        assert_eq!(l.check(&elsewhere, Some(990), 1_001, true), Ok(()), "another provider's address is another account");
        let mut other = ann.clone();
        other.email = Some("bob@corp.test".into());
        assert_eq!(l.check(&other, Some(990), 1_001, true), Ok(()));
        l.prune(2_000);
        assert!(l.is_empty());
    }

    #[test]
    fn entries_round_trip_as_json() {
        let e = Entry { key: Key::Session("wf".into(), "s:1".into()), at: 1, until: 2 };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
    }
}
