//! SCIM 2.0 service provider (a subset of RFC 7643 / RFC 7644) under
//! `/.idfabric/scim/v2/`, so an identity provider's provisioning client (Microsoft
//! Entra, Okta) tells idfabric about joiners, movers and leavers.
//!
//! Why idfabric keeps SCIM users at all: a leaver must lose access *now*, not when
//! their tokens expire. Provisioning clients announce a leaver by `PATCH active:false`
//! or `DELETE`; both end the person's access through `crate::revocation::revoke`
//! (sessions ended on every replica, bearer tokens issued before refused). A user set
//! `active: true` again signs in afresh: the deny entry only refuses credentials issued
//! before the revocation.
//!
//! The caller is identified by its bearer token: each provider file may carry
//! `scim: { token_file | token, subject }` and the token names the provider. Users
//! and groups are kept in the session store under `idf:{scim}:{provider}:…` (the
//! `{scim}` hash tag keeps them in one Redis Cluster slot).
//!
//! A SCIM user maps to the idfabric subject `{provider}:{externalId}` (Entra sends the
//! user's objectId as `externalId`, Okta its user id), or `{provider}:{userName}` with
//! `scim.subject: userName` for a provider whose subject claim is the UPN or email.
//!
//! Movers: a provisioned user's browser sessions take their groups from the SCIM
//! store (`crate::session::directory`, read at each session lookup, so at most one second after a
//! change with the per-process lookup cache), not from the sign-in's token. A
//! membership change also tells every replica to drop its cached lookups of the
//! members concerned (`crate::revocation::groups_changed`), and a removal refuses the
//! members' bearer tokens issued before it: those carry the old groups claim.
//!
//! Supported: `Users` POST, GET by id, GET list (all, or `filter=userName eq "…"`),
//! PUT, PATCH (`add`/`replace`/`remove`; Entra's `"False"` string and path-less
//! values), DELETE; `Groups` POST, GET by id, GET list (all, or
//! `filter=displayName eq "…"`), PUT, PATCH (members add/remove/replace,
//! `displayName`), DELETE. Anything else is answered with the SCIM error schema
//! (RFC 7644 §3.12).

mod patch;
mod store;

use crate::config::{ScimSpec, ScimSubject};
use crate::revocation::{revoke, Event, Source, Target};
use crate::runtime::Runtime;
use crate::web::{Reply, Request};
use serde_json::{json, Value};
pub use store::ScimStore;

/// The base path of the SCIM endpoints.
pub const PREFIX: &str = "/.idfabric/scim/v2";

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub(crate) const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Whether the canonical `path` is one of the SCIM endpoints.
pub fn is_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/.idfabric/scim/v2/")
}

/// A SCIM error (RFC 7644 §3.12): the status, the `scimType` when the RFC names one,
/// a human-readable detail, and the fixed reason for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
    pub reason: &'static str,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, reason: &'static str, detail: impl Into<String>) -> ScimError {
        ScimError { status, scim_type, detail: detail.into(), reason }
    }
    fn bad(scim_type: &'static str, reason: &'static str, detail: impl Into<String>) -> ScimError {
        ScimError::new(400, Some(scim_type), reason, detail)
    }
    fn not_found(what: &str) -> ScimError {
        ScimError::new(404, None, "not_found", format!("{what} not found"))
    }
    fn unavailable(e: &crate::session::StoreError) -> ScimError {
        tracing::warn!(error = %e, "SCIM request not applied: session store unavailable");
        ScimError::new(503, None, "session_store_unavailable", "the session store cannot be reached")
    }

    fn reply(&self) -> Reply {
        let mut body = json!({"schemas": [ERROR_SCHEMA], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut r = scim_reply(self.status, &body, self.reason);
        if self.status == 401 {
            r.headers.push(("www-authenticate", "Bearer realm=\"idfabric-scim\"".into()));
        }
        r
    }
}

fn scim_reply(status: u16, body: &Value, reason: &'static str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/scim+json".into()), ("cache-control", "no-store".into())],
        body: serde_json::to_vec(body).unwrap_or_default(),
        reason,
    }
}

/// A user the provider provisions over SCIM, with its memberships of now (for the
/// access review, `crate::access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The global `{provider}:{subject}`.
    pub sub: String,
    pub provider: String,
    pub username: Option<String>,
    pub name: Option<String>,
    pub active: bool,
    /// Group names as sessions see them (`crate::session::directory`).
    pub groups: Vec<String>,
}

/// The addresses a user is known by, as idfabric compares them
/// (`crate::session::email_key_part`): its `userName` when that is an address, and the
/// values of its `emails` (RFC 7643 §4.1.2); values that are not one address are
/// skipped. At most 16: more is not a person's list of addresses.
fn emails_of(user: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let listed = user["emails"].as_array().into_iter().flatten().map(|v| &v["value"]);
    for v in std::iter::once(&user["userName"]).chain(listed).take(16) {
        if let Some(e) = v.as_str().and_then(crate::session::email_key_part) {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    out
}

/// Every user provider `provider` provisioned, with its memberships. Users without a
/// subject are left out.
pub async fn directory(store: &dyn crate::session::Store, provider: &str, spec: &ScimSpec) -> Result<Vec<Provisioned>, crate::session::StoreError> {
    let scim = ScimStore::new(store, provider);
    let attr = match spec.subject {
        ScimSubject::ExternalId => "externalId",
        ScimSubject::UserName => "userName",
    };
    let mut out = Vec::new();
    for id in scim.ids("Users").await? {
        let Some(user) = scim.get("Users", &id).await? else { continue };
        let Some(subject) = user.get(attr).and_then(Value::as_str).filter(|s| !s.is_empty()) else { continue };
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        out.push(Provisioned {
            sub: format!("{provider}:{subject}"),
            provider: provider.to_string(),
            username: text(&user["userName"]),
            name: text(&user["displayName"]).or_else(|| text(&user["name"]["formatted"])),
            active: active(&user),
            groups: crate::session::directory::tag_names(&scim.memberships(&id).await?),
        });
    }
    Ok(out)
}

/// The answer to a body larger than `web::MAX_BODY` (the gateway stops reading it).
pub fn too_large() -> Reply {
    finish(None, "body", Err(ScimError::new(413, None, "body_too_large", format!("the request body is larger than {} bytes", crate::web::MAX_BODY))))
}

/// Handles one SCIM request.
pub async fn handle(rt: &Runtime, req: &Request<'_>) -> Reply {
    let (provider, spec) = match authenticate(rt, req) {
        Ok(p) => p,
        Err(e) => return finish(None, "auth", Err(e)),
    };
    let rest = req.path.strip_prefix(PREFIX).unwrap_or("");
    let mut parts = rest.trim_start_matches('/').splitn(2, '/');
    let resource = parts.next().unwrap_or("");
    let id = parts.next().filter(|s| !s.is_empty());
    let label = match resource {
        "Users" => "users",
        "Groups" => "groups",
        _ => "other",
    };
    let Some(sessions) = &rt.sessions else {
        return finish(Some(&provider), label, Err(ScimError::new(503, None, "no_session_store", "idfabric has no session store")));
    };
    let store = ScimStore::new(sessions.store.as_ref(), &provider);
    let cx = Cx { rt, provider: &provider, spec: &spec, store, req };
    let result = match (resource, id) {
        ("Users", id) => cx.users(id).await,
        ("Groups", id) => cx.groups(id).await,
        ("ServiceProviderConfig", None) => method(req, &["GET"]).map(|_| (200, service_provider_config())),
        _ => Err(ScimError::not_found("resource type")),
    };
    finish(Some(&provider), label, result)
}

/// Counts and logs the request and builds its reply.
fn finish(provider: Option<&str>, resource: &'static str, result: Result<(u16, Value), ScimError>) -> Reply {
    let m = crate::metrics::metrics();
    match result {
        Ok((status, body)) => {
            m.scim_requests_total.with_label_values(&[resource, "ok"]).inc();
            if status == 204 {
                let mut r = scim_reply(204, &Value::Null, "ok");
                r.body.clear();
                r.headers.retain(|(n, _)| *n != "content-type");
                return r;
            }
            scim_reply(status, &body, "ok")
        }
        Err(e) => {
            m.scim_requests_total.with_label_values(&[resource, e.reason]).inc();
            tracing::info!(provider = provider.unwrap_or("-"), resource, status = e.status, reason = e.reason, "SCIM request refused");
            e.reply()
        }
    }
}

/// The provider whose `scim` token the request carries.
fn authenticate(rt: &Runtime, req: &Request<'_>) -> Result<(String, ScimSpec), ScimError> {
    let unauthorized = |reason, detail: &str| ScimError::new(401, None, reason, detail);
    let value = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(value) = value else {
        return Err(unauthorized("no_credential", "an Authorization: Bearer token is required"));
    };
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => t.trim(),
        _ => return Err(unauthorized("malformed_credential", "the Authorization header must be `Bearer <token>`")),
    };
    // Every configured token is compared, so the time taken does not say which matched.
    let mut found = None;
    for p in &rt.config.providers {
        if let Some(s) = &p.scim {
            if s.matches(token) && found.is_none() {
                found = Some((p.id.clone(), s.clone()));
            }
        }
    }
    found.ok_or_else(|| unauthorized("bad_token", "the bearer token is not a SCIM token of any provider"))
}

fn method(req: &Request<'_>, allowed: &[&str]) -> Result<(), ScimError> {
    if allowed.contains(&req.method) {
        Ok(())
    } else {
        Err(ScimError::new(405, None, "method_not_allowed", format!("use one of {}", allowed.join(", "))))
    }
}

struct Cx<'a> {
    rt: &'a Runtime,
    provider: &'a str,
    spec: &'a ScimSpec,
    store: ScimStore<'a>,
    req: &'a Request<'a>,
}

impl Cx<'_> {
    fn body(&self) -> Result<Value, ScimError> {
        let v: Value = serde_json::from_slice(self.req.body).map_err(|e| ScimError::bad("invalidSyntax", "invalid_json", format!("the body is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(ScimError::bad("invalidSyntax", "invalid_json", "the body must be a JSON object"));
        }
        Ok(v)
    }

    fn location(&self, resource: &str, id: &str) -> String {
        format!("{}://{}{PREFIX}/{resource}/{id}", self.req.scheme(), self.req.host)
    }

    async fn users(&self, id: Option<&str>) -> Result<(u16, Value), ScimError> {
        match (self.req.method, id) {
            ("POST", None) => self.create_user().await,
            ("GET", None) => self.list("Users").await,
            ("GET", Some(id)) => Ok((200, self.get_user(id).await?)),
            ("PUT", Some(id)) => self.replace_user(id).await,
            ("PATCH", Some(id)) => self.patch_user(id).await,
            ("DELETE", Some(id)) => self.delete_user(id).await,
            (_, None) => method(self.req, &["GET", "POST"]).map(|_| (200, Value::Null)),
            (_, Some(_)) => method(self.req, &["GET", "PUT", "PATCH", "DELETE"]).map(|_| (200, Value::Null)),
        }
    }

    async fn groups(&self, id: Option<&str>) -> Result<(u16, Value), ScimError> {
        match (self.req.method, id) {
            ("POST", None) => self.create_group().await,
            ("GET", None) => self.list("Groups").await,
            ("GET", Some(id)) => Ok((200, self.get_group(id).await?)),
            ("PUT", Some(id)) => self.replace_group(id).await,
            ("PATCH", Some(id)) => self.patch_group(id).await,
            ("DELETE", Some(id)) => {
                let g = self.get_group(id).await?;
                self.sync_members(Some(&g), None).await?;
                self.store.delete("Groups", id, g["displayName"].as_str()).await.map_err(|e| ScimError::unavailable(&e))?;
                Ok((204, Value::Null))
            }
            (_, None) => method(self.req, &["GET", "POST"]).map(|_| (200, Value::Null)),
            (_, Some(_)) => method(self.req, &["GET", "PUT", "PATCH", "DELETE"]).map(|_| (200, Value::Null)),
        }
    }

    async fn get_user(&self, id: &str) -> Result<Value, ScimError> {
        self.store.get("Users", id).await.map_err(|e| ScimError::unavailable(&e))?.ok_or_else(|| ScimError::not_found("user"))
    }

    async fn get_group(&self, id: &str) -> Result<Value, ScimError> {
        self.store.get("Groups", id).await.map_err(|e| ScimError::unavailable(&e))?.ok_or_else(|| ScimError::not_found("group"))
    }

    async fn create_user(&self) -> Result<(u16, Value), ScimError> {
        let body = self.body()?;
        let mut user = self.user_from(body, &store::new_id())?;
        let name = user_name(&user)?;
        if self.store.find("Users", &name).await.map_err(|e| ScimError::unavailable(&e))?.is_some() {
            return Err(ScimError::new(409, Some("uniqueness"), "user_exists", "a user with this userName exists"));
        }
        let id = user["id"].as_str().unwrap_or_default().to_string();
        stamp(&mut user, "User", &self.location("Users", &id), None);
        self.save("Users", &user, None).await?;
        self.index_subject(&user, None).await?;
        if !active(&user) {
            self.leaver(&user, Event::UserDeactivated).await?;
        }
        Ok((201, user))
    }

    async fn replace_user(&self, id: &str) -> Result<(u16, Value), ScimError> {
        let old = self.get_user(id).await?;
        let mut user = self.user_from(self.body()?, id)?;
        stamp(&mut user, "User", &self.location("Users", id), Some(&old));
        self.apply_user(&old, user).await
    }

    async fn patch_user(&self, id: &str) -> Result<(u16, Value), ScimError> {
        let old = self.get_user(id).await?;
        let ops = patch::ops(&self.body()?)?;
        let mut user = old.clone();
        for op in &ops {
            patch::apply(&mut user, op)?;
        }
        let user = self.user_from(user, id)?;
        let mut user = user;
        stamp(&mut user, "User", &self.location("Users", id), Some(&old));
        self.apply_user(&old, user).await
    }

    /// Saves `user` over `old` and revokes when it became inactive.
    async fn apply_user(&self, old: &Value, user: Value) -> Result<(u16, Value), ScimError> {
        let name = user_name(&user)?;
        if let Some(other) = self.store.find("Users", &name).await.map_err(|e| ScimError::unavailable(&e))? {
            if other != user["id"].as_str().unwrap_or_default() {
                return Err(ScimError::new(409, Some("uniqueness"), "user_exists", "a user with this userName exists"));
            }
        }
        self.save("Users", &user, old["userName"].as_str()).await?;
        self.index_subject(&user, Some(old)).await?;
        if active(old) && !active(&user) {
            self.leaver(&user, Event::UserDeactivated).await?;
        }
        Ok((200, user))
    }

    async fn delete_user(&self, id: &str) -> Result<(u16, Value), ScimError> {
        let user = self.get_user(id).await?;
        // Revoked first: a store failure leaves the user in place for the client's retry.
        self.leaver(&user, Event::UserDeleted).await?;
        let subject = self.subject_of(&user);
        self.store.forget_user(id, subject.as_deref()).await.map_err(|e| ScimError::unavailable(&e))?;
        if let Some(s) = &subject {
            self.store.index_emails(None, &[], Some((s, &emails_of(&user)))).await.map_err(|e| ScimError::unavailable(&e))?;
        }
        self.store.delete("Users", id, user["userName"].as_str()).await.map_err(|e| ScimError::unavailable(&e))?;
        Ok((204, Value::Null))
    }

    /// Checks a user resource and gives it `id` and the core schema.
    fn user_from(&self, mut user: Value, id: &str) -> Result<Value, ScimError> {
        let o = user.as_object_mut().ok_or_else(|| ScimError::bad("invalidSyntax", "invalid_json", "the user must be an object"))?;
        o.insert("id".into(), json!(id));
        if !o.contains_key("schemas") {
            o.insert("schemas".into(), json!([USER_SCHEMA]));
        }
        match o.get("active") {
            None => {
                o.insert("active".into(), json!(true));
            }
            Some(v) => {
                let b = patch::boolean(v).ok_or_else(|| ScimError::bad("invalidValue", "invalid_value", "`active` must be true or false"))?;
                o.insert("active".into(), json!(b));
            }
        }
        user_name(&user)?;
        if self.spec.subject == ScimSubject::ExternalId && user.get("externalId").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(ScimError::bad(
                "invalidValue",
                "missing_external_id",
                "`externalId` is required: it is the user's id at the provider, which names the idfabric subject (scim.subject: externalId)",
            ));
        }
        Ok(user)
    }

    async fn save(&self, resource: &str, v: &Value, old_name: Option<&str>) -> Result<(), ScimError> {
        let name_attr = if resource == "Users" { "userName" } else { "displayName" };
        self.store.put(resource, v, v[name_attr].as_str(), old_name).await.map_err(|e| ScimError::unavailable(&e))
    }

    /// The provider-local subject `user` names (`scim.subject`), when it has one.
    fn subject_of(&self, user: &Value) -> Option<String> {
        let attr = match self.spec.subject {
            ScimSubject::ExternalId => "externalId",
            ScimSubject::UserName => "userName",
        };
        user.get(attr).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// Indexes `user` by its subject, so a session of that subject finds its groups, and
    /// by its email addresses, so a Shared Signals event that names one finds the user.
    async fn index_subject(&self, user: &Value, old: Option<&Value>) -> Result<(), ScimError> {
        let subject = self.subject_of(user);
        let before = old.and_then(|o| Some((self.subject_of(o)?, emails_of(o))));
        let before = before.as_ref().map(|(s, e)| (s.as_str(), e.as_slice()));
        self.store.index_emails(subject.as_deref(), &emails_of(user), before).await.map_err(|e| ScimError::unavailable(&e))?;
        let (Some(id), Some(subject)) = (user["id"].as_str(), subject) else { return Ok(()) };
        let old = old.and_then(|o| self.subject_of(o));
        self.store.index_subject(id, &subject, old.as_deref()).await.map_err(|e| ScimError::unavailable(&e))
    }

    /// Brings the members' membership sets from group `old` to group `new` (either
    /// absent: created, deleted) and tells every replica whose groups changed. Called
    /// before the group resource is written: when it fails, the client's retry finds
    /// the same difference (the set commands are idempotent).
    async fn sync_members(&self, old: Option<&Value>, new: Option<&Value>) -> Result<(), ScimError> {
        use std::collections::BTreeSet;
        let members = |g: Option<&Value>| -> BTreeSet<String> {
            g.and_then(|g| g["members"].as_array())
                .map(|m| m.iter().filter_map(|x| x["value"].as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let (was, now) = (members(old), members(new));
        let (old_tag, new_tag) = (old.map(crate::session::directory::group_tag), new.map(crate::session::directory::group_tag));
        let same = old_tag == new_tag;
        let unavailable = |e: crate::session::StoreError| ScimError::unavailable(&e);
        // A member who loses the group, or whose group lost its name (renamed, deleted).
        let mut removed = Vec::new();
        if let Some(tag) = &old_tag {
            for u in was.iter().filter(|u| !(same && now.contains(*u))) {
                self.store.remove_membership(u, tag).await.map_err(unavailable)?;
                removed.push(u.clone());
            }
        }
        let mut added = Vec::new();
        if let Some(tag) = &new_tag {
            for u in now.iter().filter(|u| !(same && was.contains(*u))) {
                self.store.add_membership(u, tag).await.map_err(unavailable)?;
                if !removed.contains(u) {
                    added.push(u.clone());
                }
            }
        }
        for (users, cut) in [(removed, true), (added, false)] {
            for u in users {
                let Some(user) = self.store.get("Users", &u).await.map_err(unavailable)? else { continue };
                let Some(subject) = self.subject_of(&user) else { continue };
                crate::revocation::groups_changed(self.rt, &format!("{}:{subject}", self.provider), cut).await.map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Ends the access of the person `user` names on every replica.
    async fn leaver(&self, user: &Value, event: Event) -> Result<(), ScimError> {
        let attr = match self.spec.subject {
            ScimSubject::ExternalId => "externalId",
            ScimSubject::UserName => "userName",
        };
        let Some(subject) = user.get(attr).and_then(Value::as_str).filter(|s| !s.is_empty()) else {
            return Err(ScimError::bad("invalidValue", "missing_external_id", format!("the user has no `{attr}`: its subject is unknown")));
        };
        match revoke(self.rt, Target::subject_of(self.provider, subject), Source::Scim, event).await {
            Ok(_) => Ok(()),
            Err(e) => Err(ScimError::unavailable(&e)),
        }
    }

    async fn list(&self, resource: &str) -> Result<(u16, Value), ScimError> {
        let attr = if resource == "Users" { "userName" } else { "displayName" };
        let ids = match self.req.param("filter") {
            Some(f) => {
                let value = parse_filter(&f, attr)?;
                self.store.find(resource, &value).await.map_err(|e| ScimError::unavailable(&e))?.into_iter().collect()
            }
            None => self.store.ids(resource).await.map_err(|e| ScimError::unavailable(&e))?,
        };
        let mut all = Vec::new();
        for id in ids {
            if let Some(v) = self.store.get(resource, &id).await.map_err(|e| ScimError::unavailable(&e))? {
                all.push(v);
            }
        }
        all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let number = |name: &str, default: usize| -> Result<usize, ScimError> {
            match self.req.param(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| ScimError::bad("invalidValue", "invalid_value", format!("`{name}` must be a number"))),
            }
        };
        let start = number("startIndex", 1)?.max(1);
        let count = number("count", 100)?.min(1000);
        let page: Vec<Value> = all.iter().skip(start - 1).take(count).cloned().collect();
        Ok((200, json!({"schemas": [LIST_SCHEMA], "totalResults": all.len(), "startIndex": start, "itemsPerPage": page.len(), "Resources": page})))
    }

    async fn create_group(&self) -> Result<(u16, Value), ScimError> {
        let mut group = group_from(self.body()?, &store::new_id())?;
        let name = group["displayName"].as_str().unwrap_or_default().to_string();
        if self.store.find("Groups", &name).await.map_err(|e| ScimError::unavailable(&e))?.is_some() {
            return Err(ScimError::new(409, Some("uniqueness"), "group_exists", "a group with this displayName exists"));
        }
        let id = group["id"].as_str().unwrap_or_default().to_string();
        stamp(&mut group, "Group", &self.location("Groups", &id), None);
        self.sync_members(None, Some(&group)).await?;
        self.save("Groups", &group, None).await?;
        Ok((201, group))
    }

    async fn replace_group(&self, id: &str) -> Result<(u16, Value), ScimError> {
        let old = self.get_group(id).await?;
        let mut group = group_from(self.body()?, id)?;
        stamp(&mut group, "Group", &self.location("Groups", id), Some(&old));
        self.sync_members(Some(&old), Some(&group)).await?;
        self.save("Groups", &group, old["displayName"].as_str()).await?;
        Ok((200, group))
    }

    async fn patch_group(&self, id: &str) -> Result<(u16, Value), ScimError> {
        let old = self.get_group(id).await?;
        let ops = patch::ops(&self.body()?)?;
        let mut group = old.clone();
        for op in &ops {
            patch::apply(&mut group, op)?;
        }
        let mut group = group_from(group, id)?;
        stamp(&mut group, "Group", &self.location("Groups", id), Some(&old));
        self.sync_members(Some(&old), Some(&group)).await?;
        self.save("Groups", &group, old["displayName"].as_str()).await?;
        tracing::info!(provider = self.provider, group = id, "SCIM group changed; members' sessions read their groups afresh");
        // Entra expects 204 or 200 for PATCH; the resource is returned (RFC 7644 §3.5.2).
        Ok((200, group))
    }
}

fn group_from(mut group: Value, id: &str) -> Result<Value, ScimError> {
    let o = group.as_object_mut().ok_or_else(|| ScimError::bad("invalidSyntax", "invalid_json", "the group must be an object"))?;
    o.insert("id".into(), json!(id));
    if !o.contains_key("schemas") {
        o.insert("schemas".into(), json!([GROUP_SCHEMA]));
    }
    if o.get("displayName").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(ScimError::bad("invalidValue", "missing_display_name", "`displayName` is required"));
    }
    let members = o.entry("members").or_insert_with(|| json!([]));
    let ok = members.as_array().is_some_and(|m| m.iter().all(|x| x.get("value").and_then(Value::as_str).is_some()));
    if !ok {
        return Err(ScimError::bad("invalidValue", "invalid_value", "`members` must be a list of objects with a string `value`"));
    }
    Ok(group)
}

fn user_name(user: &Value) -> Result<String, ScimError> {
    match user.get("userName").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => Ok(n.to_string()),
        _ => Err(ScimError::bad("invalidValue", "missing_user_name", "`userName` is required")),
    }
}

fn active(user: &Value) -> bool {
    user.get("active").and_then(patch::boolean).unwrap_or(true)
}

/// Sets `meta` (RFC 7643 §3.1): created (kept from `old`), lastModified, location,
/// version.
fn stamp(v: &mut Value, resource_type: &str, location: &str, old: Option<&Value>) {
    let now = crate::audit::rfc3339_ms(crate::audit::now_ms());
    let created = old.and_then(|o| o["meta"]["created"].as_str()).map(str::to_string).unwrap_or_else(|| now.clone());
    let version = format!("W/\"{}\"", crate::audit::now_ms());
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "meta".into(),
            json!({"resourceType": resource_type, "created": created, "lastModified": now, "location": location, "version": version}),
        );
        o.remove("password");
    }
}

/// The one filter form supported: `ATTR eq "value"` (RFC 7644 §3.4.2.2), with `ATTR`
/// compared case-insensitively (attribute names are case-insensitive, §3.10).
fn parse_filter(filter: &str, attr: &str) -> Result<String, ScimError> {
    let invalid = || ScimError::bad("invalidFilter", "invalid_filter", format!("only the filter `{attr} eq \"value\"` is supported"));
    let f = filter.trim();
    let (name, rest) = f.split_once(char::is_whitespace).ok_or_else(invalid)?;
    let (op, value) = rest.trim_start().split_once(char::is_whitespace).ok_or_else(invalid)?;
    if !name.eq_ignore_ascii_case(attr) || !op.eq_ignore_ascii_case("eq") {
        return Err(invalid());
    }
    match serde_json::from_str::<Value>(value.trim()) {
        Ok(Value::String(s)) => Ok(s),
        _ => Err(invalid()),
    }
}

fn service_provider_config() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": 1000},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token", "description": "The provider's scim token"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_eq_filter_is_accepted() {
        assert_eq!(parse_filter("userName eq \"a@b.test\"", "userName").unwrap(), "a@b.test");
        assert_eq!(parse_filter("USERNAME  EQ \"x\\\"y\"", "userName").unwrap(), "x\"y");
        for bad in ["userName co \"a\"", "emails eq \"a\"", "userName eq a", "userName eq \"a\" and active eq true", "", "userName"] {
            let e = parse_filter(bad, "userName").unwrap_err();
            assert_eq!((e.status, e.scim_type), (400, Some("invalidFilter")), "{bad}");
        }
    }

    #[test]
    fn errors_use_the_scim_error_schema() {
        let r = ScimError::bad("invalidFilter", "invalid_filter", "nope").reply();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["schemas"][0], ERROR_SCHEMA);
        assert_eq!((v["status"].as_str(), v["scimType"].as_str()), (Some("400"), Some("invalidFilter")));
        assert!(r.headers.iter().any(|(n, v)| *n == "content-type" && v == "application/scim+json"));
    }
}
