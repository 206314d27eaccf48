//! Group memberships that a provisioning source (SCIM, `crate::scim`) keeps per user
//! in the session store, read at each session lookup ([`groups_for`]) so a mover's
//! group change applies to live sessions.
//!
//! Why it lives under `session`: sessions read it, and the provisioning code that
//! writes it already depends on the session store; the key layout is shared here so
//! neither needs the other. Per provider: `idf:{scim}:{provider}:Users:subject:{subject}`
//! names the provisioned user of an idfabric subject, and the set
//! `idf:{scim}:{provider}:Users:memberof:{user id}` holds one tag per group the user is a
//! member of ([`group_tag`]). Sets change by single add/remove commands, so two
//! concurrent changes to different groups never lose one another.
//!
//! The set `idf:{scim}:{provider}:Users:email:{address}` holds the subjects of the
//! provisioned users that list the address (as `userName` or in `emails`), for Shared
//! Signals events that name a person by email (`crate::revocation`).

use super::{Store, StoreError};
use serde_json::Value;

/// The set of membership tags of user `user_id`.
pub fn memberof_key(provider: &str, user_id: &str) -> String {
    format!("idf:{{scim}}:{provider}:Users:memberof:{user_id}")
}

/// The user id of a subject (provider-local).
pub fn subject_key(provider: &str, subject: &str) -> String {
    format!("idf:{{scim}}:{provider}:Users:subject:{subject}")
}

/// The subjects (provider-local) of the provisioned users that list `email` (already
/// `crate::session::email_key_part`).
pub fn email_key(provider: &str, email: &str) -> String {
    format!("idf:{{scim}}:{provider}:Users:email:{email}")
}

/// The global subjects (`{provider}:{subject}`) of the users provider `provider`
/// provisioned that list `email` (compared as `crate::session::email_key_part` makes
/// it), sorted.
pub async fn subjects_by_email(store: &dyn Store, provider: &str, email: &str) -> Result<Vec<String>, StoreError> {
    let Some(email) = super::email_key_part(email) else { return Ok(Vec::new()) };
    let mut subs: Vec<String> = store.members(&email_key(provider, &email)).await?.into_iter().map(|s| format!("{provider}:{s}")).collect();
    subs.sort();
    Ok(subs)
}

/// The membership tag of a group: its id, `displayName` and `externalId` (empty when
/// absent) as a JSON array, so a rename or a new `externalId` is a different tag.
pub fn group_tag(group: &Value) -> String {
    let field = |k: &str| group.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    serde_json::to_string(&[field("id"), field("displayName"), field("externalId")]).unwrap_or_default()
}

/// The group names a set of tags grants: each group's `displayName` and, when it has
/// one, its `externalId` (Entra's groups claim carries the group's object id), sorted,
/// without duplicates. Tags of an unknown shape grant nothing.
pub fn tag_names(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let Ok([_, name, ext]) = serde_json::from_str::<[String; 3]>(t) else { continue };
        out.extend([name, ext].into_iter().filter(|s| !s.is_empty()));
    }
    out.sort();
    out.dedup();
    out
}

/// The groups of the provisioned user whose subject (provider-local) is `subject`:
/// `None` when the provider has provisioned no such user (the session keeps its
/// token's groups). Two store reads: the subject index and the membership set.
pub async fn groups_for(store: &dyn Store, provider: &str, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
    let Some(user) = store.get(&subject_key(provider, subject)).await?.and_then(|b| String::from_utf8(b).ok()) else {
        return Ok(None);
    };
    Ok(Some(tag_names(&store.members(&memberof_key(provider, &user)).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_carry_id_name_and_external_id() {
        let a = group_tag(&json!({"id": "g1", "displayName": "Eng", "externalId": "8aa1"}));
        let b = group_tag(&json!({"id": "g2", "displayName": "Sales"}));
        let renamed = group_tag(&json!({"id": "g1", "displayName": "Engineering", "externalId": "8aa1"}));
        assert_ne!(a, renamed, "a rename is another tag");
        assert_eq!(tag_names(&[a, b, "junk".into()]), vec!["8aa1", "Eng", "Sales"]);
    }
}
