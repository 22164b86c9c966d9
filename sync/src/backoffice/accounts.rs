//! Back-office accounts: roles, the password rule, argon2id hashing, and
//! `lineprobe-sync user add|passwd|disable|enable|role|list`.

use std::io::{IsTerminal as _, Read, Write};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use clap::{Subcommand, ValueEnum};
use rand::RngCore as _;
use serde::Serialize;

use crate::store::backoffice::UserChanged;
use crate::{Error, Store};

/// Shortest password accepted, in characters.
const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in characters (argon2 hashes any length;
/// this only bounds the work a sign-in form can ask for).
const MAX_PASSWORD_CHARS: usize = 1024;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page but the admin ones.
    Viewer,
    /// Also edits and publishes the probe configuration, manages users and
    /// reads the audit log.
    Admin,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// `lineprobe-sync user …`.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input (first line),
    /// or asked for twice when standard input is a terminal.
    Add {
        /// The sign-in name: letters, digits and `._@-`, up to 64.
        name: String,
        /// What the user may do.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Set a user's password (read as for `add`); ends the user's sessions.
    Passwd {
        /// The sign-in name.
        name: String,
    },
    /// Disable a user: no further sign-in, and the user's sessions end now.
    /// Refused when it would leave no enabled admin, unless `--force`.
    Disable {
        /// The sign-in name.
        name: String,
        /// Disable the last enabled admin too (the back office's admin
        /// pages are then out of everyone's reach until `user enable` or
        /// `user role NAME admin` here).
        #[arg(long)]
        force: bool,
    },
    /// Enable a disabled user again.
    Enable {
        /// The sign-in name.
        name: String,
    },
    /// Change a user's role; ends the user's sessions. Demoting the last
    /// enabled admin is refused unless `--force`.
    Role {
        /// The sign-in name.
        name: String,
        /// The new role.
        #[arg(value_enum)]
        role: Role,
        /// Demote the last enabled admin too (the back office's admin
        /// pages are then out of everyone's reach until `user role NAME
        /// admin` here).
        #[arg(long)]
        force: bool,
    },
    /// List the users (JSON; never the password hashes).
    List,
}

/// Checks a user name: 1 to 64 of letters, digits and `._@-`, starting
/// with a letter or digit.
pub(super) fn check_name(name: &str) -> Result<(), Error> {
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Error::UserAccount(format!(
            "{name:?} is not a user name: use 1 to 64 letters, digits, '.', '_', '@' or '-', \
             starting with a letter or digit"
        )))
    }
}

/// Checks the password rule: 12 to 1024 characters, not all the same
/// character and not the user name.
pub fn check_password(name: &str, password: &str) -> Result<(), Error> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(Error::UserAccount(format!(
            "the password has {chars} characters; use at least {MIN_PASSWORD_CHARS} (a \
             passphrase of a few words is easiest)"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(Error::UserAccount(format!(
            "the password has {chars} characters; use at most {MAX_PASSWORD_CHARS}"
        )));
    }
    let mut distinct = password.chars();
    let first = distinct.next();
    if distinct.all(|c| Some(c) == first) || password.eq_ignore_ascii_case(name) {
        return Err(Error::UserAccount(
            "the password is too easy to guess (one repeated character, or the user name)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Hashes a password with argon2id (the `argon2` defaults: 19 MiB, two
/// passes, one lane) and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::Internal(format!("cannot encode a password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash a password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (with the parameters
/// the hash records).
pub(super) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Reads a new password: asked for twice on a terminal, else the first
/// line of `stdin`.
pub(super) fn read_new_password(name: &str, stdin: &mut dyn Read) -> Result<String, Error> {
    if std::io::stdin().is_terminal() {
        let prompt_error = |e: std::io::Error| Error::Input {
            what: "the password prompt".to_owned(),
            source: e,
        };
        let first = rpassword::prompt_password(format!("New password for {name}: "))
            .map_err(prompt_error)?;
        let again =
            rpassword::prompt_password("The same password again: ").map_err(prompt_error)?;
        if first != again {
            return Err(Error::UserAccount(
                "the two passwords differ; nothing was changed".to_owned(),
            ));
        }
        return Ok(first);
    }
    first_line(stdin)
}

/// The first line of `stdin` (without its line end), as a password.
fn first_line(stdin: &mut dyn Read) -> Result<String, Error> {
    let mut text = Vec::new();
    stdin
        .take(64 * 1024)
        .read_to_end(&mut text)
        .map_err(|source| Error::Input {
            what: "standard input".to_owned(),
            source,
        })?;
    let text = String::from_utf8(text).map_err(|_| {
        Error::UserAccount("the password read from standard input is not UTF-8".to_owned())
    })?;
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(Error::UserAccount(
            "no password on standard input: pipe it in (`printf '%s\\n' \"$PW\" | \
             lineprobe-sync user …`) or run on a terminal to be asked"
                .to_owned(),
        ));
    }
    Ok(line.to_owned())
}

/// Runs one `user` subcommand against `store`, reading passwords from
/// `stdin` (or a prompt) and writing what it did to `out`. Every change is
/// written to the audit log as done by `cli:<login name>`.
pub async fn run_user_command(
    store: &Store,
    command: &UserCommand,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let now = chrono::Utc::now().timestamp_millis();
    let actor = format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".to_owned())
    );
    let audit = |action: &'static str, detail: serde_json::Value| {
        let actor = actor.clone();
        async move {
            store
                .audit(&crate::store::backoffice::AuditEntry {
                    at_ms: now,
                    actor: &actor,
                    action,
                    source_ip: "local",
                    detail: &detail,
                })
                .await
        }
    };
    let missing = |name: &str| Error::UserAccount(format!("there is no user {name:?}"));
    let say = |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(Error::Output);
    match command {
        UserCommand::Add { name, role } => {
            add_user(store, name, *role, stdin, now).await?;
            audit(
                "user_add",
                serde_json::json!({ "user": name, "role": role.as_str() }),
            )
            .await?;
            say(out, format!("user {name} added ({})", role.as_str()))
        }
        UserCommand::Passwd { name } => {
            if store.user_by_name(name).await?.is_none() {
                return Err(missing(name));
            }
            let password = read_new_password(name, stdin)?;
            check_password(name, &password)?;
            let hash = blocking_hash(password).await?;
            if !store.user_set_password(name, &hash, now).await? {
                return Err(missing(name));
            }
            audit("user_passwd", serde_json::json!({ "user": name })).await?;
            say(
                out,
                format!("password of {name} changed; its sessions ended"),
            )
        }
        UserCommand::Disable { name, force } => {
            if !change_an_admin(store, name, None, *force, now).await? {
                return Err(missing(name));
            }
            audit(
                "user_disable",
                serde_json::json!({ "user": name, "force": force }),
            )
            .await?;
            if store.active_admins().await? == 0 {
                say(out, NO_ADMIN_LEFT.to_owned())?;
            }
            say(out, format!("user {name} disabled; its sessions ended"))
        }
        UserCommand::Enable { name } => {
            if !store.user_set_disabled(name, false, now).await? {
                return Err(missing(name));
            }
            audit("user_enable", serde_json::json!({ "user": name })).await?;
            say(out, format!("user {name} enabled"))
        }
        UserCommand::Role { name, role, force } => {
            if !change_an_admin(store, name, Some(*role), *force, now).await? {
                return Err(missing(name));
            }
            audit(
                "user_role",
                serde_json::json!({ "user": name, "role": role.as_str(), "force": force }),
            )
            .await?;
            if *role != Role::Admin && store.active_admins().await? == 0 {
                say(out, NO_ADMIN_LEFT.to_owned())?;
            }
            say(
                out,
                format!("user {name} is now {}; its sessions ended", role.as_str()),
            )
        }
        UserCommand::List => {
            let users = store.users().await?;
            serde_json::to_writer_pretty(&mut *out, &users).map_err(|e| Error::Output(e.into()))?;
            writeln!(out).map_err(Error::Output)
        }
    }
}

/// What `user disable --force` and `user role --force` say when no enabled
/// admin is left.
const NO_ADMIN_LEFT: &str =
    "warning: no enabled admin is left; enable one or add one with `user add NAME --role admin`";

/// `user role` (`role` given) or `user disable` (`None`) of `name`: made in
/// the same guarded update the users page makes, refused when it would
/// leave no enabled admin; with `force`, made regardless. `false` when
/// there is no such user.
async fn change_an_admin(
    store: &Store,
    name: &str,
    role: Option<Role>,
    force: bool,
    now: i64,
) -> Result<bool, Error> {
    let changed = match (role, force) {
        (Some(role), true) => return store.user_set_role(name, role.as_str(), now).await,
        (None, true) => return store.user_set_disabled(name, true, now).await,
        (Some(role), false) => {
            store
                .user_set_role_keeping_an_admin(name, role.as_str(), now)
                .await?
        }
        (None, false) => {
            store
                .user_set_disabled_keeping_an_admin(name, true, now)
                .await?
        }
    };
    match changed {
        UserChanged::Changed => Ok(true),
        UserChanged::NoSuchUser => Ok(false),
        UserChanged::LastAdmin => Err(last_admin(
            name,
            if role.is_some() { "demote" } else { "disable" },
        )),
    }
}

/// Why `user disable` or `user role` (`verb`: what it would have done to
/// `name`) was refused: no enabled admin would be left, checked in the
/// same guarded update the users page makes.
fn last_admin(name: &str, verb: &str) -> Error {
    Error::UserAccount(format!(
        "not changed: {name:?} is the last enabled admin; to {verb} it would leave no one who \
         can manage users or publish the probe configuration in the back office. Make another \
         user admin first (`user role OTHER admin`, or `user add OTHER --role admin`), or give \
         --force to do it anyway (`user enable {name}` / `user role {name} admin` undo it)"
    ))
}

/// `user add`: checks the name and the password read, then stores the
/// account.
async fn add_user(
    store: &Store,
    name: &str,
    role: Role,
    stdin: &mut dyn Read,
    now: i64,
) -> Result<(), Error> {
    check_name(name)?;
    if let Some(existing) = same_name(store, name).await? {
        return Err(Error::UserAccount(format!(
            "user {existing:?} exists; use `user passwd {existing}` to set a new password"
        )));
    }
    let password = read_new_password(name, stdin)?;
    check_password(name, &password)?;
    let hash = blocking_hash(password).await?;
    match store.user_insert(name, role.as_str(), &hash, now).await? {
        Some(_) => Ok(()),
        None => Err(Error::UserAccount(format!("user {name:?} exists"))),
    }
}

/// The account whose name `name` is, but for letter case. Names that differ
/// only so are one name to a reader of the audit log and to the sign-in
/// throttle (which counts failures per name in lower case): a right
/// password for one cleared the other's failures, so an account of one's
/// own named like a colleague's lifted the backoff on guessing theirs.
pub(super) async fn same_name(store: &Store, name: &str) -> Result<Option<String>, Error> {
    Ok(store
        .users()
        .await?
        .into_iter()
        .map(|u| u.name)
        .find(|n| n.eq_ignore_ascii_case(name)))
}

/// Hashes on a blocking thread: argon2id takes tens of milliseconds by
/// design.
pub(super) async fn blocking_hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| Error::Internal(format!("the password hashing thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salts differ");
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterz", &a));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn password_rule() {
        assert!(check_password("ann", "short").is_err());
        assert!(check_password("ann", &"a".repeat(20)).is_err());
        assert!(check_password("annannannann", "ANNANNANNANN").is_err());
        assert!(check_password("ann", &"x".repeat(1025)).is_err());
        check_password("ann", "two words here").unwrap();
        // Characters, not bytes: 12 Chinese characters are enough.
        check_password("ann", "线路合规核查后台口令足够长").unwrap();
    }

    #[test]
    fn names() {
        for ok in ["ann", "a.b-c_d@corp", "A1"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", "a b", "名字", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn piped_passwords_are_the_first_line() {
        let mut input: &[u8] = b"my long passphrase\r\nignored\n";
        assert_eq!(first_line(&mut input).unwrap(), "my long passphrase");
        let mut empty: &[u8] = b"\n";
        assert!(first_line(&mut empty).is_err());
    }
}
