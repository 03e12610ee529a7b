//! Demo mode: `cradle serve --demo` seeds a demo centre and one account per role with
//! generated passwords, the same across restarts; without `--demo` there are no
//! default accounts.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::*;

const DEMO_CAMERAS: [&str; 5] = ["infant-room", "toddler-room", "preschool-room", "entrance", "nappy-room"];

fn demo_spec_cameras(spec: &mut ServerSpec) {
    for id in DEMO_CAMERAS {
        spec.cameras.push(CameraSpec::new(id, "rtsp://127.0.0.1:9/none"));
    }
}

async fn cameras_of(server: &Server, token: &str) -> Vec<String> {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/cameras", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["cameras"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_seeds_every_role_and_is_idempotent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    demo_spec_cameras(&mut spec);
    let mut server = spec.start_with(&["--demo"]).await;
    let file = spec.dir.join("data").join("demo-accounts.json");
    let first = std::fs::read(&file).expect("demo-accounts.json written");
    let accounts: Vec<Value> = serde_json::from_slice(&first).unwrap();
    let roles: Vec<&str> = accounts.iter().map(|a| a["role"].as_str().unwrap()).collect();
    for role in ["admin", "operator", "parent", "investigator", "regulator", "committee"] {
        assert!(roles.contains(&role), "no demo {role} in {roles:?}");
    }
    assert!(roles.iter().filter(|r| **r == "parent").count() >= 2, "two parents");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Every account signs in; each parent sees only their own child's classroom camera
    // and never the private nappy-room camera.
    let pw = |user: &str| {
        accounts.iter().find(|a| a["username"] == user).unwrap()["password"].as_str().unwrap().to_owned()
    };
    for a in &accounts {
        server.login(a["username"].as_str().unwrap(), a["password"].as_str().unwrap()).await;
    }
    let infant = server.login("parent-infant", &pw("parent-infant")).await;
    let toddler = server.login("parent-toddler", &pw("parent-toddler")).await;
    assert_eq!(cameras_of(&server, &infant).await, vec!["infant-room"]);
    assert_eq!(cameras_of(&server, &toddler).await, vec!["toddler-room"]);
    for token in [&infant, &toddler] {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/cameras/nappy-room", server.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let operator = server.login("operator", &pw("operator")).await;
    assert_eq!(cameras_of(&server, &operator).await.len(), DEMO_CAMERAS.len());

    // A restart with --demo changes nothing: same accounts, same passwords, and the
    // centre is not seeded twice (the parents still see one camera each).
    server.terminate();
    let server = spec.start_with(&["--demo"]).await;
    assert_eq!(std::fs::read(&file).unwrap(), first, "demo accounts changed across a restart");
    let infant = server.login("parent-infant", &pw("parent-infant")).await;
    assert_eq!(cameras_of(&server, &infant).await, vec!["infant-room"]);
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    assert_eq!(db.list_users().await.unwrap().len(), accounts.len() + 1, "the demo accounts plus the test admin");
    assert_eq!(db.list_children(db.centre().await.unwrap().id, None).await.unwrap().len(), 6);
    assert!(matches!(cradle::audit::verify(&db).await.unwrap(), cradle::audit::Verdict::Intact { .. }));
    // The configuration is audited when it is new or changed, not at every start.
    let q = cradle::audit::AuditQuery { action: Some("config_changed".into()), ..Default::default() };
    let changes = cradle::audit::list(&db, &q).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].detail["cameras"].as_array().unwrap().len(), DEMO_CAMERAS.len());
    let q = cradle::audit::AuditQuery { action: Some("account_created".into()), ..Default::default() };
    assert_eq!(cradle::audit::list(&db, &q).await.unwrap().len(), accounts.len() + 1, "demo accounts and the test admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_demo_mode_there_are_no_default_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    demo_spec_cameras(&mut spec);
    let server = spec.start().await;
    assert!(!spec.dir.join("data").join("demo-accounts.json").exists());
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    let users: Vec<String> = db.list_users().await.unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(users, vec![TEST_ADMIN.to_owned()], "only the account the test made");
    for (user, password) in [("admin", "admin"), ("admin", "password"), ("root", "root")] {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/login", server.base))
            .json(&serde_json::json!({ "username": user, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

/// The sign-in and admin pages in headless Chromium on a phone-sized screen: signed out,
/// /admin leads to /login and back; every table fills; adding an area through the page
/// works (cookie and CSRF token). The screenshot is kept in target/test-artifacts/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_signs_in_and_manages_the_centre_in_a_browser_on_a_phone() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    demo_spec_cameras(&mut spec);
    let server = spec.start_with(&["--demo"]).await;
    let accounts: Value =
        serde_json::from_slice(&std::fs::read(spec.dir.join("data").join("demo-accounts.json")).unwrap()).unwrap();
    let admin = accounts.as_array().unwrap().iter().find(|a| a["role"] == "admin").unwrap();
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/admin_page.py");
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args([&server.base, admin["username"].as_str().unwrap(), admin["password"].as_str().unwrap()])
        .arg(artifacts.join("admin-page-phone.png"))
        .output()
        .await
        .expect("run tests/web/admin_page.py");
    assert!(
        out.status.success(),
        "{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
}
