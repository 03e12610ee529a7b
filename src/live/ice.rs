//! ICE servers for viewers: STUN URLs as configured, TURN URLs with short-lived
//! credentials in coturn's `use-auth-secret` scheme (the TURN REST API draft:
//! username `<unix expiry>:<user>`, password `base64(HMAC-SHA1(secret, username))`),
//! sent as WHEP `Link: <url>; rel="ice-server"` headers.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::config::LiveConfig;

/// TURN credentials valid until `expires_unix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub password: String,
}

pub fn turn_credential(secret: &str, user: &str, expires_unix: i64) -> TurnCredential {
    let username = format!("{expires_unix}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential { username, password }
}

/// Quotes a Link parameter value (RFC 8288 quoted-string).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `Link` header values for a viewer named `user`, now `now_unix`.
pub fn link_headers(cfg: &LiveConfig, user: &str, now_unix: i64) -> Vec<String> {
    let mut out: Vec<String> = cfg.stun_servers.iter().map(|u| format!("<{u}>; rel=\"ice-server\"")).collect();
    if let Some(secret) = &cfg.turn_secret {
        let c = turn_credential(secret, user, now_unix + cfg.turn_ttl.as_secs() as i64);
        for u in &cfg.turn_servers {
            out.push(format!(
                "<{u}>; rel=\"ice-server\"; username={}; credential={}; credential-type=\"password\"",
                quoted(&c.username),
                quoted(&c.password)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_coturns_rest_scheme() {
        // Checked against: printf %s "1700000000:mum" | openssl dgst -binary -sha1 -hmac "0123456789abcdef" | base64
        let c = turn_credential("0123456789abcdef", "mum", 1_700_000_000);
        assert_eq!(c.username, "1700000000:mum");
        assert_eq!(c.password, "fx7K/GZlgt68IafTn56QnVq7XrQ=");
    }

    #[test]
    fn links_name_stun_plainly_and_turn_with_expiring_credentials() {
        let cfg = LiveConfig {
            stun_servers: vec!["stun:stun.example.org:3478".into()],
            turn_servers: vec!["turn:turn.example.org:3478?transport=udp".into()],
            turn_secret: Some("0123456789abcdef".into()),
            turn_ttl: std::time::Duration::from_secs(600),
            ..LiveConfig::default()
        };
        let links = link_headers(&cfg, "mum", 1000);
        assert_eq!(links[0], "<stun:stun.example.org:3478>; rel=\"ice-server\"");
        assert!(links[1].starts_with("<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"1600:mum\"; credential=\""));
        assert!(links[1].ends_with("credential-type=\"password\""));
        assert_eq!(link_headers(&LiveConfig::default(), "mum", 1000), Vec::<String>::new());
    }
}
