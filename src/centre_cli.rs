//! `cradle centre …`: the centre's administration from the command line, for bootstrap
//! and scripts. Each command does what the matching admin API route does — the same
//! JSON bodies (`--json`), the same rules, the same audit entries (actor `cli:USER`) —
//! and prints the result as JSON.

use clap::Subcommand;
use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::{self, Action, NewEntry};
use crate::centre::{
    CameraUpdate, CentreError, ChildId, ClassroomId, ConsentState, GuardianId, NewArea, NewChild, NewClassroom,
    NewGuardian, Stamp,
};
use crate::config::{CameraFields, CameraId, Config, EnvRefs};
use crate::db::Db;
use crate::time::now_us;

#[derive(Subcommand)]
pub enum CentreCmd {
    /// Print the centre: settings, classrooms, areas, cameras, children, guardians.
    Show,
    /// Open a classroom: --json '{"name":"向日葵 Sunflowers","kind":"toddler","capacity":15}'
    /// (kind: infant ≤ 10, toddler ≤ 15, preschool ≤ 20; capacity defaults to the maximum).
    ClassroomAdd {
        #[arg(long)]
        json: String,
    },
    /// Close an empty classroom (kept for history).
    ClassroomClose {
        #[arg(long)]
        id: i64,
    },
    /// Add an area: --json '{"name":"换尿布间 Nappy room","private":true}'.
    AreaAdd {
        #[arg(long)]
        json: String,
    },
    /// Add a camera to record (the server starts it within seconds):
    /// --json '{"id":"room-3","name":"Room 3","url":"rtsp://192.0.2.13/ch1","username":"viewer","password":"…"}'.
    /// Ids of the config file's cameras are refused: edit those in the file.
    CameraAdd {
        #[arg(long)]
        json: String,
    },
    /// Place a camera or set parent viewing:
    /// --json '{"placement":{"kind":"classroom","classroom_id":1},"parent_viewable":true}'.
    CameraSet {
        #[arg(long)]
        camera: String,
        #[arg(long)]
        json: String,
    },
    /// Record a camera as decommissioned. Recording continues until the camera is
    /// removed from the config file.
    CameraDecommission {
        #[arg(long)]
        camera: String,
        #[arg(long)]
        reason: String,
    },
    /// Enrol a child: --json '{"name":"王小宝","classroom_id":1,"birth_date":"2025-07-12"}'.
    ChildAdd {
        #[arg(long)]
        json: String,
    },
    /// Move a child to another classroom.
    ChildMove {
        #[arg(long)]
        child: i64,
        #[arg(long)]
        classroom: i64,
    },
    /// Add a guardian (the parent's account username): --json '{"username":"ms.wang","display_name":"王妈妈"}'.
    GuardianAdd {
        #[arg(long)]
        json: String,
    },
    /// Link a guardian to a child.
    GuardianLink {
        #[arg(long)]
        guardian: i64,
        #[arg(long)]
        child: i64,
        #[arg(long)]
        relationship: String,
    },
    /// Record consent given or withdrawn for a guardian–child link.
    Consent {
        #[arg(long)]
        guardian: i64,
        #[arg(long)]
        child: i64,
        /// given | withdrawn
        #[arg(long)]
        state: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// A command's failure: the exit code and the message for standard error.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<CentreError> for Failure {
    fn from(e: CentreError) -> Self {
        let code = match e {
            CentreError::Db(_) => 1,
            _ => 2,
        };
        Failure { code, message: e.to_string() }
    }
}

impl From<crate::db::DbError> for Failure {
    fn from(e: crate::db::DbError) -> Self {
        Failure { code: 1, message: e.to_string() }
    }
}

fn invalid(message: String) -> Failure {
    Failure { code: 2, message }
}

fn body<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Failure> {
    serde_json::from_str(json).map_err(|e| invalid(format!("--json: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("centre types serialise")
}

/// Runs one command; the result is printed as pretty JSON by the caller.
pub async fn run(db: &Db, config: &Config, actor: &str, cmd: CentreCmd) -> Result<Value, Failure> {
    let centre = db.centre().await?;
    let stamp = Stamp { by: actor, at_us: now_us() };
    let (action, target, out) = match cmd {
        CentreCmd::Show => {
            let mut configs = config.cameras.clone();
            configs.extend(db.added_cameras().await?.into_iter().filter(|c| !config.cameras.iter().any(|x| x.id == c.id)));
            let cameras = crate::centre::merge_cameras(&configs, db.camera_placements(centre.id).await?);
            return Ok(json!({
                "centre": to_json(&centre),
                "classrooms": to_json(&db.list_classrooms(centre.id).await?),
                "areas": to_json(&db.list_areas(centre.id).await?),
                "cameras": to_json(&cameras),
                "children": to_json(&db.list_children(centre.id, None).await?),
                "guardians": to_json(&db.list_guardians(centre.id).await?),
            }));
        }
        CentreCmd::ClassroomAdd { json } => {
            let c = db.create_classroom(centre.id, &body::<NewClassroom>(&json)?, stamp).await?;
            (Action::CentreChanged, format!("classroom {}", c.id), to_json(&c))
        }
        CentreCmd::ClassroomClose { id } => {
            let c = db.close_classroom(ClassroomId(id), stamp).await?;
            (Action::CentreChanged, format!("classroom {id}"), to_json(&c))
        }
        CentreCmd::AreaAdd { json } => {
            let a = db.create_area(centre.id, &body::<NewArea>(&json)?, stamp).await?;
            (Action::CentreChanged, format!("area {}", a.id), to_json(&a))
        }
        CentreCmd::CameraAdd { json } => {
            let camera = body::<CameraFields>(&json)?
                .validate(EnvRefs::Literal)
                .map_err(|(field, reason)| invalid(format!("--json: {field}: {reason}")))?;
            if config.cameras.iter().any(|c| c.id == camera.id) {
                return Err(invalid(format!("camera {:?} is already defined in {}", camera.id.as_str(), config.path.display())));
            }
            db.add_camera(&camera, stamp).await?;
            let out = json!({ "id": camera.id.as_str(), "name": camera.name, "source": "database", "url": camera.url.as_str(), "retention_days": camera.retention_days });
            (Action::CentreChanged, format!("camera {}", camera.id), out)
        }
        CentreCmd::CameraSet { camera, json } => {
            let id = configured_camera(db, config, &camera).await?;
            let p = db.update_camera(centre.id, &id, body::<CameraUpdate>(&json)?, stamp).await?;
            (Action::CentreChanged, format!("camera {camera}"), to_json(&p))
        }
        CentreCmd::CameraDecommission { camera, reason } => {
            let id = configured_camera(db, config, &camera).await?;
            let p = db.decommission_camera(centre.id, &id, &reason, stamp).await?;
            (Action::CentreChanged, format!("camera {camera}"), to_json(&p))
        }
        CentreCmd::ChildAdd { json } => {
            let c = db.enrol_child(centre.id, &body::<NewChild>(&json)?, stamp).await?;
            (Action::CentreChanged, format!("child {}", c.id), to_json(&c))
        }
        CentreCmd::ChildMove { child, classroom } => {
            let c = db.move_child(ChildId(child), ClassroomId(classroom), stamp).await?;
            (Action::CentreChanged, format!("child {child}"), to_json(&c))
        }
        CentreCmd::GuardianAdd { json } => {
            let g = db.create_guardian(centre.id, &body::<NewGuardian>(&json)?, stamp).await?;
            (Action::CentreChanged, format!("guardian {}", g.id), to_json(&g))
        }
        CentreCmd::GuardianLink { guardian, child, relationship } => {
            let l = db.link_guardian(GuardianId(guardian), ChildId(child), &relationship, stamp).await?;
            (Action::CentreChanged, format!("guardian {guardian} child {child}"), to_json(&l))
        }
        CentreCmd::Consent { guardian, child, state, note } => {
            let state: ConsentState = serde_json::from_value(Value::String(state.clone()))
                .map_err(|_| invalid(format!("--state {state:?}: use given or withdrawn")))?;
            let r = db.set_consent(GuardianId(guardian), ChildId(child), state, &note, stamp).await?;
            (Action::ConsentChanged, format!("guardian {guardian} child {child}"), to_json(&r))
        }
    };
    let entry = NewEntry {
        actor: Some(actor.to_owned()),
        actor_role: Some("cli".into()),
        action,
        target: Some(target),
        addr: None,
        detail: out.clone(),
    };
    audit::append(db, entry).await?;
    Ok(out)
}

/// A camera of the config file or one added by an admin.
async fn configured_camera(db: &Db, config: &Config, id: &str) -> Result<CameraId, Failure> {
    if let Some(c) = config.cameras.iter().find(|c| c.id.as_str() == id) {
        return Ok(c.id.clone());
    }
    let missing = || invalid(format!("camera {id:?} is not in {} and was not added (camera-add)", config.path.display()));
    let cam = CameraId::parse(id).map_err(|_| missing())?;
    match db.added_camera(&cam).await? {
        Some(c) => Ok(c.id),
        None => Err(missing()),
    }
}
