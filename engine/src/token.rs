//! The bearer token an experiment's agents and generators require: derived from the
//! controller's key and the experiment's uid, so every replica (and a new leader) knows it
//! without reading any Secret. The controller only creates each experiment's Secret, for its
//! pods to mount; it needs no permission to read Secrets anywhere.

use ring::hmac;

/// The shortest key accepted: 32 bytes, as much as the HMAC-SHA256 output it keys.
pub(crate) const MIN_KEY_LEN: usize = 32;

pub struct TokenKey(hmac::Key);

impl TokenKey {
    pub fn new(secret: &str) -> Result<Self, String> {
        let secret = secret.trim();
        if secret.len() < MIN_KEY_LEN {
            return Err(format!(
                "the token key is {} bytes; it must be at least {MIN_KEY_LEN} (a random string, \
                 the same for every replica)",
                secret.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())))
    }

    /// 64 hex digits, the same for the same uid under the same key.
    pub fn token_for(&self, experiment_uid: &str) -> String {
        let tag = hmac::sign(&self.0, experiment_uid.as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 32 bytes for one `purpose` (a key seed), the same for the same uid under the same key
    /// and unrelated to the token or to other purposes.
    pub(crate) fn seed_for(&self, purpose: &str, experiment_uid: &str) -> [u8; 32] {
        // A NUL cannot occur in a purpose or a uid, so no two (purpose, uid) pairs sign the
        // same bytes, nor does any pair sign a bare uid as the token does.
        let message = [purpose.as_bytes(), &[0], experiment_uid.as_bytes()].concat();
        let tag = hmac::sign(&self.0, &message);
        let mut seed = [0; 32];
        seed.copy_from_slice(tag.as_ref());
        seed
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_depends_on_the_key_and_the_uid_only() {
        let key = TokenKey::new("k".repeat(32).as_str()).unwrap();
        let token = key.token_for("uid-1");
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(token, key.token_for("uid-1"));
        assert_ne!(token, key.token_for("uid-2"));
        let other = TokenKey::new("j".repeat(32).as_str()).unwrap();
        assert_ne!(token, other.token_for("uid-1"));
    }

    #[test]
    fn a_short_key_is_refused_with_its_length() {
        let error = TokenKey::new("short").unwrap_err();
        assert!(
            error.contains("5 bytes") && error.contains("at least 32"),
            "{error}"
        );
    }
}
