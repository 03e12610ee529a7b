//! Who is asking: roles, password hashing, session tokens and login throttling.
//!
//! Passwords are hashed with argon2id (OWASP parameters: 19 MiB, 2 passes) on a
//! blocking thread. A session token is 32 random bytes shown to the client once; the
//! database keeps only its SHA-256, so a copy of the database opens no session. The
//! HTTP side (cookie, Bearer, CSRF, role checks as extractors) is in `api::auth`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What an account may do. Each role sees only what its users need (see README, "Roles").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages the centre, accounts and cameras; approves evidence requests.
    Admin,
    /// Watches the cameras' health and live views; acknowledges alarms.
    Operator,
    /// Watches their own children's classrooms live, inside the rules.
    Parent,
    /// Police: files evidence requests; sees only approved footage.
    Investigator,
    /// The education or public-security authority: coverage and audit, no video.
    Regulator,
    /// The parents' committee: reads who watched what (the viewing audit).
    Committee,
}

pub const ALL_ROLES: [Role; 6] =
    [Role::Admin, Role::Operator, Role::Parent, Role::Investigator, Role::Regulator, Role::Committee];

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Parent => "parent",
            Role::Investigator => "investigator",
            Role::Regulator => "regulator",
            Role::Committee => "committee",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        ALL_ROLES.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = ALL_ROLES.iter().map(|r| r.as_str()).collect();
            format!("unknown role {s:?}; use one of {}", names.join(", "))
        })
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// SHA-256 of the session token (identifies the session without revealing it).
    pub session: String,
    pub csrf_token: String,
    pub expires_at_us: i64,
    pub addr: Option<String>,
}

// ---- usernames and passwords -------------------------------------------------------------

/// 3–64 characters: letters, digits, `.`, `_`, `-`, `@` (e-mail addresses work).
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if !(3..=64).contains(&name.len()) || !name.chars().all(ok) {
        return Err(format!(
            "username {name:?} must be 3 to 64 characters of letters, digits, '.', '_', '-' or '@'"
        ));
    }
    Ok(())
}

/// At least 10 characters; long passphrases are welcome (up to 1024 bytes).
pub fn check_password(pw: &str) -> Result<(), String> {
    if pw.chars().count() < 10 {
        return Err("the password must have at least 10 characters".into());
    }
    if pw.len() > 1024 {
        return Err("the password must be at most 1024 bytes".into());
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // OWASP's first recommended argon2id setting: m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`). Slow on
/// purpose (~30 ms): call from a blocking thread.
pub fn hash_password(pw: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt encodes");
    argon2().hash_password(pw.as_bytes(), &salt).expect("argon2 hashing cannot fail with valid params").to_string()
}

/// Checks a password against a stored PHC string. Unknown or corrupt hashes never match.
pub fn verify_password(pw: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon2().verify_password(pw.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the username is unknown, so that the answer takes
/// as long as for a real account (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone"))
}

/// A random password for generated (demo) accounts: 16 characters, easy to type.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..16).map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char).collect()
}

// ---- session tokens ------------------------------------------------------------------------

/// A new random token (64 hex characters) and its SHA-256, which is what is stored.
pub fn new_token() -> (String, String) {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    let token = hex::encode(b);
    let digest = token_digest(&token);
    (token, digest)
}

pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- login throttling ----------------------------------------------------------------------

/// Counts failed logins per key (an account or an address). After `max` failures
/// within `window` the key is blocked for one minute, doubling with every further
/// block, up to the window. A success clears the account's count. Kept in memory:
/// a restart forgets the counts, which costs an attacker a restart of the server.
pub struct Throttle {
    max: u32,
    window: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    failures: u32,
    first: Instant,
    blocks: u32,
    blocked_until: Option<Instant>,
}

const FIRST_BLOCK: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 100_000;

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Throttle {
        Throttle { max, window, buckets: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` when `key` is blocked now.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap();
        match buckets.get(key).and_then(|b| b.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the block it caused, if any.
    pub fn fail(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_KEYS {
            let window = self.window;
            buckets.retain(|_, b| now.duration_since(b.first) < window || b.blocked_until.is_some_and(|u| u > now));
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket { failures: 0, first: now, blocks: 0, blocked_until: None });
        if now.duration_since(b.first) >= self.window && b.blocked_until.is_none_or(|u| u <= now) {
            // A quiet window has passed: start counting again (earlier blocks still
            // count toward the length of the next one until a success).
            b.failures = 0;
            b.first = now;
        }
        b.failures += 1;
        if b.failures < self.max {
            return None;
        }
        let block = FIRST_BLOCK.saturating_mul(1 << b.blocks.min(16)).min(self.window.max(FIRST_BLOCK));
        b.blocks += 1;
        b.failures = 0;
        b.first = now;
        b.blocked_until = Some(now + block);
        Some(block)
    }

    pub fn clear(&self, key: &str) {
        self.buckets.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for r in ALL_ROLES {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("admin, operator"));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert_ne!(hash_password("same"), hash_password("same"), "salted");
    }

    #[test]
    fn username_and_password_rules() {
        assert!(check_username("ms.wang@example.cn").is_ok());
        assert!(check_username("ab").is_err());
        assert!(check_username("a b c").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("ten chars!").is_ok());
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (t1, d1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 64);
        assert_eq!(token_digest(&t1), d1);
        assert_ne!(t1, d1);
        assert!(constant_time_eq("abc", "abc") && !constant_time_eq("abc", "abd") && !constant_time_eq("ab", "abc"));
    }

    #[test]
    fn throttle_blocks_after_max_failures_and_backs_off() {
        let t = Throttle::new(3, Duration::from_secs(900));
        let t0 = Instant::now();
        assert_eq!(t.fail("user:a", t0), None);
        assert_eq!(t.fail("user:a", t0), None);
        assert!(t.check("user:a", t0).is_ok());
        assert_eq!(t.fail("user:a", t0), Some(Duration::from_secs(60)));
        assert_eq!(t.check("user:a", t0 + Duration::from_secs(10)), Err(Duration::from_secs(50)));
        assert!(t.check("user:b", t0).is_ok(), "keys are independent");
        // After the block, three more failures block for twice as long.
        let t1 = t0 + Duration::from_secs(61);
        assert!(t.check("user:a", t1).is_ok());
        t.fail("user:a", t1);
        t.fail("user:a", t1);
        assert_eq!(t.fail("user:a", t1), Some(Duration::from_secs(120)));
        t.clear("user:a");
        assert!(t.check("user:a", t1).is_ok());
    }
}
