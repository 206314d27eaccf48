//! SCIM resources in the session store: each resource as JSON under
//! `idf:{scim}:{provider}:{Users|Groups}:{id}`, a case-insensitive index of the
//! `userName` / `displayName` (`…:name:{lowercase name}` → id) for the one supported
//! filter and for uniqueness, and the set of ids (`…:ids`) for listing.
//!
//! Group memberships are also kept per user, for the sessions to read, in the layout
//! of `crate::session::directory` (a membership set per user, a subject index).
//!
//! Resources are kept for [`KEEP`] after their last change: the provider owns the
//! lifecycle and deletes what it deprovisions. With `session.store: memory` they live
//! in the process (bounded, shared with sessions); use Redis for anything but a trial.

use crate::session::{directory, Store, StoreError};
use serde_json::Value;
use std::time::Duration;

/// How long a resource is kept after its last change.
const KEEP: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A fresh resource id: 128 random bits in the UUID text form.
pub fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The SCIM resources of one provider.
pub struct ScimStore<'a> {
    store: &'a dyn Store,
    provider: &'a str,
}

impl<'a> ScimStore<'a> {
    pub fn new(store: &'a dyn Store, provider: &'a str) -> ScimStore<'a> {
        ScimStore { store, provider }
    }

    fn key(&self, resource: &str, rest: &str) -> String {
        format!("idf:{{scim}}:{}:{resource}:{rest}", self.provider)
    }

    fn name_key(&self, resource: &str, name: &str) -> String {
        self.key(resource, &format!("name:{}", name.to_lowercase()))
    }

    pub async fn get(&self, resource: &str, id: &str) -> Result<Option<Value>, StoreError> {
        match self.store.get(&self.key(resource, &format!("id:{id}"))).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|_| StoreError::Corrupt),
        }
    }

    /// The id of the resource named `name` (case-insensitively).
    pub async fn find(&self, resource: &str, name: &str) -> Result<Option<String>, StoreError> {
        let id = self.store.get(&self.name_key(resource, name)).await?;
        Ok(id.and_then(|b| String::from_utf8(b).ok()))
    }

    pub async fn ids(&self, resource: &str) -> Result<Vec<String>, StoreError> {
        self.store.members(&self.key(resource, "ids")).await
    }

    /// Writes `v` (which carries its `id`), indexed by `name`; `old_name`'s index entry
    /// is dropped when the name changed.
    pub async fn put(&self, resource: &str, v: &Value, name: Option<&str>, old_name: Option<&str>) -> Result<(), StoreError> {
        let id = v["id"].as_str().ok_or(StoreError::Corrupt)?;
        let bytes = serde_json::to_vec(v).map_err(|_| StoreError::Corrupt)?;
        self.store.set(&self.key(resource, &format!("id:{id}")), bytes, KEEP).await?;
        self.store.add_member(&self.key(resource, "ids"), id, KEEP).await?;
        if let Some(old) = old_name.filter(|o| Some(o.to_lowercase()) != name.map(str::to_lowercase)) {
            self.store.delete(&self.name_key(resource, old)).await?;
        }
        if let Some(n) = name {
            self.store.set(&self.name_key(resource, n), id.as_bytes().to_vec(), KEEP).await?;
        }
        Ok(())
    }

    fn memberof_key(&self, user_id: &str) -> String {
        directory::memberof_key(self.provider, user_id)
    }

    fn subject_key(&self, subject: &str) -> String {
        directory::subject_key(self.provider, subject)
    }

    /// Records that user `user_id` is a member of the group tagged `tag`
    /// (`directory::group_tag`).
    pub async fn add_membership(&self, user_id: &str, tag: &str) -> Result<(), StoreError> {
        self.store.add_member(&self.memberof_key(user_id), tag, KEEP).await
    }

    pub async fn remove_membership(&self, user_id: &str, tag: &str) -> Result<(), StoreError> {
        self.store.remove_member(&self.memberof_key(user_id), tag).await.map(|_| ())
    }

    /// The tags of the groups user `user_id` is a member of.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.store.members(&self.memberof_key(user_id)).await
    }

    /// Forgets a deleted user's memberships and subject.
    pub async fn forget_user(&self, user_id: &str, subject: Option<&str>) -> Result<(), StoreError> {
        self.store.delete(&self.memberof_key(user_id)).await?;
        if let Some(s) = subject {
            self.store.delete(&self.subject_key(s)).await?;
        }
        Ok(())
    }

    /// Indexes user `user_id` by its idfabric subject (the provider-local part), the old
    /// subject's entry dropped when it changed.
    pub async fn index_subject(&self, user_id: &str, subject: &str, old: Option<&str>) -> Result<(), StoreError> {
        if let Some(o) = old.filter(|o| *o != subject) {
            self.store.delete(&self.subject_key(o)).await?;
        }
        self.store.set(&self.subject_key(subject), user_id.as_bytes().to_vec(), KEEP).await
    }

    /// Indexes `subject` (provider-local) under each of `emails` (already
    /// `crate::session::email_key_part`), after dropping `old`'s subject from each of its
    /// addresses: (subject, addresses) as the user was before this change.
    pub async fn index_emails(&self, subject: Option<&str>, emails: &[String], old: Option<(&str, &[String])>) -> Result<(), StoreError> {
        if let Some((old_subject, old_emails)) = old {
            for e in old_emails.iter().filter(|e| Some(old_subject) != subject || !emails.contains(e)) {
                self.store.remove_member(&directory::email_key(self.provider, e), old_subject).await?;
            }
        }
        if let Some(s) = subject {
            for e in emails {
                self.store.add_member(&directory::email_key(self.provider, e), s, KEEP).await?;
            }
        }
        Ok(())
    }

    pub async fn delete(&self, resource: &str, id: &str, name: Option<&str>) -> Result<(), StoreError> {
        if let Some(n) = name {
            self.store.delete(&self.name_key(resource, n)).await?;
        }
        self.store.remove_member(&self.key(resource, "ids"), id).await?;
        self.store.delete(&self.key(resource, &format!("id:{id}"))).await
    }
}

