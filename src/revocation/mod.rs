//! Revocation that every replica honours within a second: the one `revoke` that the
//! admin API, back-channel logout, Shared Signals (and later SCIM) call with their own
//! `Source`.
//!
//! Revoking a target does three things:
//! 1. ends the idfabric browser sessions of the subject, or those signed in through
//!    one upstream session (the provider's `sid`), in the session store, so every
//!    replica sees them gone on the next request;
//! 2. revokes the broker token families of those sessions (of the whole subject for a
//!    subject);
//! 3. writes a deny entry (`crate::deny`): bearer tokens of the subject (or carrying
//!    that `sid`) issued at or before the revocation are refused (`revoked`) until the
//!    entry lapses after [`DENY_LIFETIME`]. The entry goes into this replica's list at
//!    once, into the store's log (`idf:{rev}:log`, a sorted set by time) and out on the
//!    store's channel (`idf:{rev}:events`); the other replicas hear the message, or
//!    read the log within a second when they missed it ([`listen`]).
//!
//! Each revocation is counted (`idfabric_revocations_total{source,event}`) and written
//! as an audit line.

pub mod backchannel;
pub mod ssf;
mod listen;
mod poll;

pub use listen::run as listen;
pub use poll::run as ssf_poll;

use crate::deny::{Entry, Key};
use crate::runtime::Runtime;
use crate::session::StoreError;
use std::time::Duration;

/// How long a deny entry lives: the longest bearer-token lifetime idfabric expects.
/// A token issued before a revocation and still unexpired this long after it would
/// pass again; providers issue access tokens for 5 minutes to 24 hours.
pub const DENY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The store's log of deny entries (a sorted set scored by milliseconds). The `{rev}`
/// hash tag keeps it in one Cluster slot.
pub const LOG_KEY: &str = "idf:{rev}:log";
/// The store's channel on which each new deny entry is announced.
pub const CHANNEL: &str = "idf:{rev}:events";

/// Whose access ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A person: the global `{provider}:{subject}` sub.
    Subject(String),
    /// One upstream session: a provider id and that provider's `sid`.
    UpstreamSession { provider: String, sid: String },
    /// A person named by email at a provider (a Shared Signals `email` subject): the
    /// address as `crate::session::email_key_part` makes it. Resolved to the subjects
    /// that signed in with it verified and the SCIM users that list it
    /// ([`subjects_by_email`]); the address itself is denied too, so a credential of a
    /// subject idfabric has not seen yet that carries it, verified, is refused as well.
    Email { provider: String, email: String },
}

impl Target {
    /// A provider's user, by the provider's own subject.
    pub fn subject_of(provider: &str, subject: &str) -> Target {
        Target::Subject(format!("{provider}:{subject}"))
    }

    fn deny_key(&self) -> Key {
        match self {
            Target::Subject(s) => Key::Subject(s.clone()),
            Target::UpstreamSession { provider, sid } => Key::Session(provider.clone(), sid.clone()),
            Target::Email { provider, email } => Key::Email(provider.clone(), email.clone()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Target::Subject(_) => "subject",
            Target::UpstreamSession { .. } => "upstream_session",
            Target::Email { .. } => "email",
        }
    }
}

/// Who asked (the `source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /sessions/revoke` on the admin listener.
    Admin,
    /// The provider's back-channel logout (`POST /.idfabric/backchannel-logout`).
    BackchannelLogout,
    /// A Shared Signals event the provider pushed (`POST /.idfabric/ssf/events`).
    Ssf,
    /// SCIM provisioning from the provider (`crate::scim`).
    Scim,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Admin => "admin",
            Source::BackchannelLogout => "backchannel_logout",
            Source::Ssf => "ssf",
            Source::Scim => "scim",
        }
    }
}

/// What happened (the `event` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An operator ended the person's sessions (the leaver case).
    SessionRevoked,
    /// The person signed out at the provider.
    Logout,
    /// The person's credential (password, key, second factor) changed (CAEP).
    CredentialChange,
    /// The person's claims changed: the next request re-reads them (CAEP).
    ClaimsChange,
    /// The person's authentication assurance dropped (CAEP): sign in again.
    AssuranceLevelChange,
    /// The account was disabled at the provider (RISC).
    AccountDisabled,
    /// The account was deleted at the provider (RISC).
    AccountPurged,
    /// The provider requires the person to change their credential (RISC).
    CredentialChangeRequired,
    /// The provider set the user `active: false` (SCIM).
    UserDeactivated,
    /// The provider deleted the user (SCIM).
    UserDeleted,
    /// The provider removed the user from a group, renamed or deleted one of its
    /// groups (a SCIM mover): bearer tokens issued before carry stale groups.
    GroupRemoved,
}

impl Event {
    pub fn label(self) -> &'static str {
        match self {
            Event::SessionRevoked => "session_revoked",
            Event::Logout => "logout",
            Event::CredentialChange => "credential_change",
            Event::ClaimsChange => "claims_change",
            Event::AssuranceLevelChange => "assurance_level_change",
            Event::AccountDisabled => "account_disabled",
            Event::AccountPurged => "account_purged",
            Event::CredentialChangeRequired => "credential_change_required",
            Event::UserDeactivated => "user_deactivated",
            Event::UserDeleted => "user_deleted",
            Event::GroupRemoved => "group_removed",
        }
    }
}

/// Every (source, event) pair a revocation can be counted with.
const SERIES: &[(Source, &[Event])] = &[
    (Source::Admin, &[Event::SessionRevoked]),
    (Source::BackchannelLogout, &[Event::Logout]),
    (
        Source::Ssf,
        &[
            Event::SessionRevoked,
            Event::CredentialChange,
            Event::ClaimsChange,
            Event::AssuranceLevelChange,
            Event::AccountDisabled,
            Event::AccountPurged,
            Event::CredentialChangeRequired,
        ],
    ),
    (Source::Scim, &[Event::UserDeactivated, Event::UserDeleted, Event::GroupRemoved]),
];

/// Creates the continuous-access series at zero, so dashboards and alerts see a 0
/// rather than no data before the first event: every revocation pair, the `ok`
/// results of back-channel logout, Shared Signals and SCIM, each polled provider's
/// poll results and each broker client's back-channel delivery results.
pub fn zero_series(config: &crate::config::Config) {
    let m = crate::metrics::metrics();
    for (source, events) in SERIES {
        for event in *events {
            m.revocations_total.with_label_values(&[source.label(), event.label()]);
        }
    }
    m.backchannel_logouts_total.with_label_values(&["ok"]);
    for r in ["ok", "ignored"] {
        m.ssf_sets_total.with_label_values(&[r]);
    }
    for resource in ["users", "groups"] {
        m.scim_requests_total.with_label_values(&[resource, "ok"]);
    }
    for p in config.providers.iter().filter(|p| p.ssf.as_ref().is_some_and(|s| s.poll.is_some())) {
        for r in ["ok", "transport_error", "http_error", "bad_response"] {
            m.ssf_polls_total.with_label_values(&[p.id.as_str(), r]);
        }
    }
    for c in config.broker.iter().flat_map(|b| &b.clients).filter(|c| c.backchannel_logout_uri.is_some()) {
        for r in ["delivered", "failed", "gave_up"] {
            m.broker_backchannel_logouts_total.with_label_values(&[c.client_id.as_str(), r]);
        }
    }
}

/// What a revocation ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub sessions: usize,
    pub broker_families: usize,
}

/// Ends `target`'s access on every replica (see the module documentation). The deny
/// entry is in this replica's list before anything can fail; a store failure is
/// returned after it (the caller answers 503 and the sender retries: revoking twice
/// is harmless).
pub async fn revoke(rt: &Runtime, target: Target, source: Source, event: Event) -> Result<Outcome, StoreError> {
    let now = crate::providers::now_secs();
    let entry = Entry { key: target.deny_key(), at: now, until: now + DENY_LIFETIME.as_secs() as i64 };
    learn(rt, &entry);
    let mut out = Outcome::default();
    let result = async {
        if let Some(sessions) = &rt.sessions {
            // The log is the record; a lost message is caught by the others' poll.
            announce(rt, &entry).await?;
            match &target {
                Target::Subject(sub) => {
                    out.sessions = sessions.revoke_sub(sub).await?;
                    out.broker_families = crate::broker::revoke_subject(rt, sub).await?;
                }
                Target::UpstreamSession { provider, sid } => {
                    for id in sessions.revoke_upstream_session(provider, sid).await? {
                        out.sessions += 1;
                        out.broker_families += crate::broker::revoke_session_families(rt, &id).await?;
                    }
                }
                Target::Email { provider, email } => {
                    // Each subject found is denied by subject as well: its tokens need
                    // not carry the address (Entra's access tokens do not).
                    for sub in subjects_by_email(rt, provider, email).await? {
                        let entry = Entry { key: Key::Subject(sub.clone()), at: now, until: entry.until };
                        learn(rt, &entry);
                        announce(rt, &entry).await?;
                        out.sessions += sessions.revoke_sub(&sub).await?;
                        out.broker_families += crate::broker::revoke_subject(rt, &sub).await?;
                    }
                }
            }
        }
        Ok::<_, StoreError>(())
    }
    .await;
    crate::metrics::metrics().revocations_total.with_label_values(&[source.label(), event.label()]).inc();
    crate::audit::record_revocation(&crate::audit::Revocation {
        source: source.label(),
        event: event.label(),
        target: target.kind(),
        sub: match &target {
            Target::Subject(s) => Some(s.as_str()),
            Target::UpstreamSession { .. } | Target::Email { .. } => None,
        },
        provider: match &target {
            Target::Subject(s) => s.split_once(':').map(|(p, _)| p),
            Target::UpstreamSession { provider, .. } | Target::Email { provider, .. } => Some(provider.as_str()),
        },
        sessions: out.sessions,
        broker_families: out.broker_families,
        complete: result.is_ok(),
    });
    tracing::info!(
        source = source.label(),
        event = event.label(),
        target = target.kind(),
        sessions = out.sessions,
        broker_families = out.broker_families,
        complete = result.is_ok(),
        "access revoked"
    );
    result.map(|_| out)
}

/// The global subjects of `provider` that `email` names: those that signed in with it
/// verified within the last session lifetime, and the SCIM users of the provider that
/// list it (`userName` or `emails`). Sorted, without repeats.
pub async fn subjects_by_email(rt: &Runtime, provider: &str, email: &str) -> Result<Vec<String>, StoreError> {
    let Some(sessions) = &rt.sessions else { return Ok(Vec::new()) };
    let mut subs = sessions.subjects_by_email(provider, email).await?;
    if rt.config.providers.iter().any(|p| p.id == provider && p.scim.is_some()) {
        subs.extend(crate::session::directory::subjects_by_email(sessions.store.as_ref(), provider, email).await?);
    }
    subs.sort();
    subs.dedup();
    Ok(subs)
}

/// A SCIM mover: `sub`'s group memberships changed in the SCIM store (`crate::scim`),
/// which is where its sessions read their groups. Every replica drops its cached
/// lookups of `sub`, so its next request reads the new groups. When a membership was
/// cut (`removed`), bearer tokens of `sub` issued at or before now are refused too
/// (`revoked`): they carry the groups claim of before and idfabric cannot re-read it;
/// the client gets a new token. Counted and audited as a revocation
/// (`source="scim"`, `event="group_removed"`); a pure addition refuses nothing and is
/// neither.
pub async fn groups_changed(rt: &Runtime, sub: &str, removed: bool) -> Result<(), StoreError> {
    let now = crate::providers::now_secs();
    let entry = if removed {
        Entry { key: Key::Claims(sub.to_string()), at: now, until: now + DENY_LIFETIME.as_secs() as i64 }
    } else {
        // Read again by every poll for a few seconds: a minute is plenty.
        Entry { key: Key::Refresh(sub.to_string()), at: now, until: now + 60 }
    };
    learn(rt, &entry);
    let result = announce(rt, &entry).await;
    if removed {
        let (source, event) = (Source::Scim, Event::GroupRemoved);
        crate::metrics::metrics().revocations_total.with_label_values(&[source.label(), event.label()]).inc();
        crate::audit::record_revocation(&crate::audit::Revocation {
            source: source.label(),
            event: event.label(),
            target: "subject_claims",
            sub: Some(sub),
            provider: sub.split_once(':').map(|(p, _)| p),
            sessions: 0,
            broker_families: 0,
            complete: result.is_ok(),
        });
        tracing::info!(source = source.label(), event = event.label(), complete = result.is_ok(), "bearer tokens with the old groups refused");
    }
    result
}

/// Writes `entry` into the store's log and announces it on the channel.
async fn announce(rt: &Runtime, entry: &Entry) -> Result<(), StoreError> {
    let Some(sessions) = &rt.sessions else { return Ok(()) };
    let text = serde_json::to_string(entry).map_err(|_| StoreError::Corrupt)?;
    let store = sessions.store.as_ref();
    store.log_append(LOG_KEY, crate::audit::now_ms(), &text, DENY_LIFETIME).await?;
    if let Err(e) = store.publish(CHANNEL, &text).await {
        tracing::warn!(error = %e, "revocation not announced; the other replicas read it from the log");
    }
    Ok(())
}

/// Puts `entry` into this replica's deny list and, when it is news, drops the cached
/// verifications it concerns.
fn learn(rt: &Runtime, entry: &Entry) {
    if let Key::Refresh(sub) = &entry.key {
        // Nothing refused: the session lookups of the subject are read afresh.
        if entry.until > crate::providers::now_secs() {
            crate::session::cache::invalidate_subject(sub);
        }
        return;
    }
    if !crate::deny::list().apply(entry, crate::providers::now_secs()) {
        return;
    }
    // This replica's one-second cache of session lookups goes too, so the next
    // request reads the store (where the session is gone) or meets the deny check.
    match entry.key.clone() {
        Key::Subject(sub) | Key::Claims(sub) => {
            crate::session::cache::invalidate_subject(&sub);
            rt.registry.forget(move |id| id.sub == sub)
        }
        Key::Session(provider, sid) => {
            // Cached sessions are keyed by subject, not by the provider's `sid`.
            crate::session::cache::invalidate_all();
            rt.registry.forget(move |id| id.provider == provider && id.session_id.as_deref() == Some(sid.as_str()))
        }
        Key::Email(provider, email) => {
            crate::session::cache::invalidate_all();
            rt.registry.forget(move |id| id.provider == provider && crate::deny::verified_email(id).as_deref() == Some(email.as_str()))
        }
        Key::Refresh(_) => {}
    }
}
