//! Demo mode (`cradle serve --demo`): a demo centre (see `db::centre::demo`: three
//! classrooms, an entrance, a private nappy-changing room, children, guardians with
//! consent) and one account per role, so a newcomer can sign in as anyone at once. Passwords are generated on first start,
//! printed, and written to `DATA_DIR/demo-accounts.json`; later starts reuse them.
//! Without `--demo` no account exists until an admin creates one.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::db::Db;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DemoAccount {
    pub username: String,
    pub password: String,
    pub role: String,
    pub display_name: String,
}

/// (username, role, display name): every role, and two parents in different classrooms.
pub const ACCOUNTS: &[(&str, &str, &str)] = &[
    ("admin", "admin", "园长 Director Li"),
    ("operator", "operator", "值班员 Operator Zhang"),
    ("parent-infant", "parent", "王妈妈 Mrs Wang"),
    ("parent-toddler", "parent", "陈爸爸 Mr Chen"),
    ("investigator", "investigator", "民警 Officer Zhao"),
    ("regulator", "regulator", "教育局 Inspector Liu"),
    ("committee", "committee", "家委会 Committee Sun"),
];

pub fn accounts_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("demo-accounts.json")
}

/// Creates what is missing; idempotent across restarts (same accounts, same passwords).
pub async fn seed(db: &Db, config: &Config) -> anyhow::Result<Vec<DemoAccount>> {
    let file = accounts_file(&config.data_dir);
    let known: Vec<DemoAccount> = match std::fs::read(&file) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut out = Vec::with_capacity(ACCOUNTS.len());
    for &(username, role, display_name) in ACCOUNTS {
        let remembered = known.iter().find(|a| a.username == username);
        let password = remembered.map(|a| a.password.clone()).unwrap_or_else(crate::auth::generate_password);
        match db.user_by_name(username).await? {
            None => {
                crate::api::auth::create_account(db, username, Some(display_name), role, password.clone())
                    .await
                    .with_context(|| format!("creating demo account {username}"))?;
                let entry = crate::audit::NewEntry {
                    actor: Some("demo".into()),
                    actor_role: None,
                    action: crate::audit::Action::AccountCreated,
                    target: Some(username.into()),
                    addr: None,
                    detail: serde_json::json!({ "role": role, "demo": true }),
                };
                crate::audit::append(db, entry).await?;
            }
            Some(u) if remembered.is_none() => {
                // The file was lost: give the account a fresh, known password.
                let pw = password.clone();
                let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&pw)).await?;
                db.set_password(u.id, &hash, crate::time::now_us(), None).await?;
            }
            Some(_) => {}
        }
        out.push(DemoAccount {
            username: username.into(),
            password,
            role: role.into(),
            display_name: display_name.into(),
        });
    }
    write_private(&file, &serde_json::to_vec_pretty(&out)?)?;
    db.seed_demo_centre(crate::time::now_us()).await.context("seeding the demo centre")?;
    Ok(out)
}

/// Writes the file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Prints the demo accounts for the person who started the server.
pub fn announce(accounts: &[DemoAccount], data_dir: &Path) -> anyhow::Result<()> {
    println!("DEMO MODE: sign in with one of these accounts (also in {}):", accounts_file(data_dir).display());
    for a in accounts {
        println!("  {:<16} {:<13} {}", a.username, a.role, a.password);
    }
    Ok(())
}
