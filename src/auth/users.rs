//! `--auth-users FILE`: the users who may submit mail, with their password
//! hashes.
//!
//! Why it exists: a small fleet needs no directory server; a file of
//! `user:HASH` lines, as `openssl passwd -6`, `htpasswd -B` or `argon2`
//! print them, is enough. Hashes are checked by maintained crates
//! (RustCrypto's sha-crypt and argon2, and bcrypt); a check costs
//! milliseconds of CPU, so [`AuthUsers::verify`] is called on a blocking
//! thread, never on an executor.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

/// The hash schemes accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// `$6$`: SHA-512 crypt.
    Sha512Crypt,
    /// `$2b$` (and `$2a$`, `$2y$`): bcrypt.
    Bcrypt,
    /// `$argon2id$`: a PHC string.
    Argon2id,
}

impl Scheme {
    fn of(hash: &str) -> Option<Scheme> {
        if hash.starts_with("$6$") {
            Some(Scheme::Sha512Crypt)
        } else if ["$2b$", "$2a$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            Some(Scheme::Bcrypt)
        } else if hash.starts_with("$argon2id$") {
            Some(Scheme::Argon2id)
        } else {
            None
        }
    }

    /// Whether `password` matches `hash` (of this scheme).
    fn verify(self, password: &[u8], hash: &str) -> bool {
        use argon2::password_hash::PasswordVerifier as _;
        match self {
            Scheme::Sha512Crypt => sha_crypt::ShaCrypt::default()
                .verify_password(password, hash)
                .is_ok(),
            Scheme::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
            Scheme::Argon2id => argon2::Argon2::default()
                .verify_password(password, hash)
                .is_ok(),
        }
    }
}

/// A SHA-512 crypt hash no password matches, checked for unknown users so
/// that an unknown user costs what a known one does (no user
/// enumeration by timing).
const DECOY: &str =
    "$6$sluicedecoysalt$ZyHyVcSKcFiz/6sT3Hc8ON084QXh1k2nYw83YmPOaetYAM0xpFJfC1t0FyDpv8OhgTUcxQedU1XEQZY2wGAWK.";

/// The users file, loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUsers {
    hashes: HashMap<String, String>,
}

impl AuthUsers {
    /// Reads `path`: `user:HASH` per line, `#` comments and blank lines
    /// ignored. A line that is not that, an unknown scheme or a user given
    /// twice is an error naming the line.
    pub fn load(path: &Path) -> Result<AuthUsers> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read it: {e}"))?;
        AuthUsers::parse(&text)
    }

    /// [`AuthUsers::load`] on text.
    pub fn parse(text: &str) -> Result<AuthUsers> {
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bail!("line {}: expected user:HASH", n + 1);
            };
            if user.is_empty() || user.contains(char::is_whitespace) {
                bail!("line {}: {user:?} is not a user name", n + 1);
            }
            if Scheme::of(hash).is_none() {
                bail!(
                    "line {}: the hash of {user:?} is not $6$ (SHA-512 crypt), $2b$ (bcrypt) or $argon2id$",
                    n + 1
                );
            }
            if hashes.insert(user.to_string(), hash.to_string()).is_some() {
                bail!("line {}: {user:?} is given twice", n + 1);
            }
        }
        Ok(AuthUsers { hashes })
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// No users at all.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `user` exists and `password` is theirs. Slow by design
    /// (milliseconds): call it on a blocking thread.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.hashes.get(user) {
            Some(hash) => Scheme::of(hash).is_some_and(|s| s.verify(password, hash)),
            None => {
                let _ = Scheme::Sha512Crypt.verify(password, DECOY);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt secret`.
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    #[test]
    fn each_scheme_verifies_its_password_and_no_other() {
        let bcrypt = bcrypt::hash_with_salt("secret", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        let argon = {
            use argon2::password_hash::PasswordHasher as _;
            argon2::Argon2::default()
                .hash_password_with_salt(b"secret", b"saltsaltsaltsalt")
                .unwrap()
                .to_string()
        };
        let text = format!("# fleet\n\nalice:{SHA512}\nbob:{bcrypt}\ncarol:{argon}\n");
        let users = AuthUsers::parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        for user in ["alice", "bob", "carol"] {
            assert!(users.verify(user, b"secret"), "{user}");
            assert!(
                !users.verify(user, b"Secret"),
                "{user} with a wrong password"
            );
        }
        assert!(!users.verify("dave", b"secret"));
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, says) in [
            ("alice", "line 1: expected user:HASH"),
            ("\nalice:plain", "line 2: the hash of \"alice\" is not"),
            ("a b:$6$x$y", "is not a user name"),
            (
                &format!("a:{SHA512}\na:{SHA512}") as &str,
                "line 2: \"a\" is given twice",
            ),
        ] {
            let err = AuthUsers::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
