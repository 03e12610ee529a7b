//! The `[live]` table: where viewers' media flows (UDP ports, addresses, STUN/TURN) and
//! how much of it a family may use.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{expand_env, ConfigError};

#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Each viewer's peer connection binds one UDP port from this range (inclusive).
    pub udp_ports: (u16, u16),
    /// Addresses to bind; `0.0.0.0` means every non-loopback interface.
    pub bind: Vec<IpAddr>,
    /// NAT 1:1: advertised in host candidates instead of the bound addresses.
    pub public_ips: Vec<IpAddr>,
    /// `stun:` URLs the server uses to learn its reflexive address; also given to viewers.
    pub stun_servers: Vec<String>,
    /// `turn:`/`turns:` URLs handed to viewers with short-lived credentials.
    pub turn_servers: Vec<String>,
    /// coturn's `static-auth-secret` (`use-auth-secret`).
    pub turn_secret: Option<String>,
    pub turn_ttl: Duration,
    /// Concurrent streams of one family (guardians sharing a child).
    pub max_streams_per_family: usize,
    /// A parent's session ends after this; they may start another.
    pub max_session: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            udp_ports: (50000, 50999),
            bind: vec![IpAddr::from([0, 0, 0, 0])],
            public_ips: Vec::new(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(70 * 60),
            max_streams_per_family: 2,
            max_session: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLive {
    udp_ports: Option<String>,
    bind: Option<Vec<String>>,
    public_ips: Option<Vec<String>>,
    stun_servers: Option<Vec<String>>,
    turn_servers: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_ttl_minutes: Option<u64>,
    max_streams_per_family: Option<usize>,
    max_session_minutes: Option<u64>,
}

fn ips(key: &str, v: Option<Vec<String>>, err: &dyn Fn(&str, String) -> ConfigError) -> Result<Option<Vec<IpAddr>>, ConfigError> {
    v.map(|v| {
        v.iter()
            .map(|s| s.parse::<IpAddr>().map_err(|_| err(key, format!("{s:?} is not an IP address"))))
            .collect()
    })
    .transpose()
}

fn urls(key: &str, v: Option<Vec<String>>, schemes: &[&str], err: &dyn Fn(&str, String) -> ConfigError) -> Result<Vec<String>, ConfigError> {
    let v = v.unwrap_or_default();
    for u in &v {
        let ok = schemes.iter().any(|s| u.strip_prefix(s).and_then(|r| r.strip_prefix(':')).is_some_and(|r| !r.is_empty()));
        if !ok {
            return Err(err(key, format!("{u:?} must start with {}", schemes.iter().map(|s| format!("{s}:")).collect::<Vec<_>>().join(" or "))));
        }
    }
    Ok(v)
}

pub fn parse(r: RawLive, err: &dyn Fn(&str, String) -> ConfigError) -> Result<LiveConfig, ConfigError> {
    let d = LiveConfig::default();
    let udp_ports = match r.udp_ports {
        None => d.udp_ports,
        Some(s) => {
            let parsed = s.split_once('-').and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
            match parsed {
                Some((a, b)) if a >= 1024 && a <= b => (a, b),
                _ => return Err(err("live.udp_ports", format!("{s:?} is not a range like \"50000-50999\" (ports 1024–65535, low to high)"))),
            }
        }
    };
    let bind = ips("live.bind", r.bind, err)?.unwrap_or(d.bind);
    if bind.is_empty() {
        return Err(err("live.bind", "bind at least one address (0.0.0.0: every interface)".into()));
    }
    let public_ips = ips("live.public_ips", r.public_ips, err)?.unwrap_or_default();
    let stun_servers = urls("live.stun_servers", r.stun_servers, &["stun"], err)?;
    let turn_servers = urls("live.turn_servers", r.turn_servers, &["turn", "turns"], err)?;
    let turn_secret = r.turn_secret.map(|s| expand_env(&s).map_err(|e| err("live.turn_secret", e))).transpose()?;
    match (&turn_secret, turn_servers.is_empty()) {
        (None, false) => return Err(err("live.turn_secret", "TURN servers need the shared secret (coturn static-auth-secret) to issue credentials".into())),
        (Some(s), _) if s.len() < 16 => return Err(err("live.turn_secret", "use at least 16 characters".into())),
        _ => {}
    }
    let max_streams_per_family = match r.max_streams_per_family {
        None => d.max_streams_per_family,
        Some(n) if (1..=50).contains(&n) => n,
        Some(n) => return Err(err("live.max_streams_per_family", format!("{n} is outside 1..=50"))),
    };
    let max_session = match r.max_session_minutes {
        None => d.max_session,
        Some(m) if (1..=24 * 60).contains(&m) => Duration::from_secs(m * 60),
        Some(m) => return Err(err("live.max_session_minutes", format!("{m} is outside 1..=1440 minutes"))),
    };
    let turn_ttl = match r.turn_ttl_minutes {
        None => max_session + Duration::from_secs(600),
        Some(m) if (1..=7 * 24 * 60).contains(&m) => Duration::from_secs(m * 60),
        Some(m) => return Err(err("live.turn_ttl_minutes", format!("{m} is outside 1..=10080 minutes"))),
    };
    Ok(LiveConfig { udp_ports, bind, public_ips, stun_servers, turn_servers, turn_secret, turn_ttl, max_streams_per_family, max_session })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(live: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("[server]\n[live]\n{live}\n"), Path::new("t.toml"))
    }

    #[test]
    fn defaults_and_a_full_table() {
        let d = parse("").unwrap().live;
        assert_eq!((d.udp_ports, d.max_streams_per_family, d.max_session.as_secs()), ((50000, 50999), 2, 3600));
        assert_eq!(d.turn_ttl.as_secs(), 70 * 60, "credentials outlive the longest session");
        let c = parse(
            r#"udp_ports = "40000-40099"
               bind = ["127.0.0.1"]
               public_ips = ["203.0.113.7"]
               stun_servers = ["stun:stun.example.org:3478"]
               turn_servers = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
               turn_secret = "0123456789abcdef"
               max_streams_per_family = 1
               max_session_minutes = 30"#,
        )
        .unwrap()
        .live;
        assert_eq!(c.udp_ports, (40000, 40099));
        assert_eq!(c.public_ips[0].to_string(), "203.0.113.7");
        assert_eq!((c.max_streams_per_family, c.max_session.as_secs(), c.turn_ttl.as_secs()), (1, 1800, 2400));
    }

    #[test]
    fn mistakes_name_the_key_and_the_reason() {
        for (text, key, reason) in [
            (r#"udp_ports = "60000-50000""#, "live.udp_ports", "not a range"),
            (r#"udp_ports = "80-90""#, "live.udp_ports", "1024"),
            (r#"bind = ["localhost"]"#, "live.bind", "not an IP address"),
            (r#"stun_servers = ["stun.example.org"]"#, "live.stun_servers", "must start with stun:"),
            (r#"turn_servers = ["turn:t.example.org"]"#, "live.turn_secret", "shared secret"),
            (r#"turn_secret = "short""#, "live.turn_secret", "16 characters"),
            ("max_streams_per_family = 0", "live.max_streams_per_family", "outside"),
            ("max_session_minutes = 0", "live.max_session_minutes", "outside"),
            ("udp_port = 5", "line 3", "unknown field"),
        ] {
            let e = parse(text).err().unwrap_or_else(|| panic!("{text} was accepted"));
            assert!(e.key.starts_with(key), "{text}: key {:?}, want {key}", e.key);
            assert!(e.reason.contains(reason), "{text}: reason {:?} lacks {reason:?}", e.reason);
        }
    }
}
