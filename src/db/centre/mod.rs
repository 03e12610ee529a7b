//! The centre's model in the database: classrooms, areas, camera placement, children,
//! guardians and consent. The rules themselves are pure functions in [`crate::centre`];
//! this module applies them inside transactions so that concurrent requests cannot
//! break them (two enrolments racing for the last place, a camera made viewable while
//! its area is being marked private).
//!
//! Locking, the same on both back ends: every writing transaction first takes the
//! write locks it needs, in the order centre → classroom / area → camera → child, then
//! reads and checks. On PostgreSQL the lock is a no-op `UPDATE` of the row (a row lock
//! held to commit; under READ COMMITTED each later statement sees what the previous
//! holder committed). On SQLite the transaction starts with `BEGIN IMMEDIATE`, which
//! takes the database's single write lock (waiting up to the busy timeout) before the
//! first read, so no check can see a stale snapshot.
//!
//! Rows that record a decision are never deleted: classrooms are closed, cameras
//! decommissioned, guardians unlinked, and consent is an append-only history.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::{Backend, Db, DbError};
use crate::centre::*;
use crate::config::CameraId;

/// Who writes the first row of a new deployment (see the 0003 migration).
const MIGRATION_ACTOR: &str = "migration";

fn corrupt(what: String) -> CentreError {
    CentreError::Db(DbError::Sqlx(sqlx::Error::Decode(what.into())))
}

/// A unique-index violation becomes a clear conflict; anything else stays a DB error.
pub(crate) fn taken(e: sqlx::Error, message: impl FnOnce() -> String) -> CentreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => CentreError::Conflict(message()),
        e => e.into(),
    }
}

fn flag(r: &AnyRow, col: &str) -> Result<bool> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn centre_from(r: &AnyRow) -> Result<Centre> {
    let tz: String = r.try_get("time_zone")?;
    let hours: String = r.try_get("viewing_hours")?;
    Ok(Centre {
        id: CentreId(r.try_get("id")?),
        name: r.try_get("name")?,
        time_zone: CentreTimeZone::parse(&tz)
            .map_err(|e| corrupt(format!("centres.time_zone: {e}")))?,
        viewing_hours: serde_json::from_str(&hours)
            .map_err(|e| corrupt(format!("centres.viewing_hours {hours:?}: {e}")))?,
        updated_at_us: r.try_get("updated_at_us")?,
        updated_by: r.try_get("updated_by")?,
    })
}

macro_rules! classroom_select {
    () => {
        "SELECT c.id, c.centre_id, c.name, c.kind, c.capacity, c.closed_at_us, c.updated_at_us, c.updated_by,
                (SELECT COUNT(*) FROM children k WHERE k.classroom_id = c.id AND k.left_at_us IS NULL) AS enrolled
         FROM classrooms c "
    };
}

fn classroom_from(r: &AnyRow) -> Result<Classroom> {
    let kind: String = r.try_get("kind")?;
    let kind = ClassroomKind::parse(&kind).map_err(|e| corrupt(format!("classrooms.kind: {e}")))?;
    Ok(Classroom {
        id: ClassroomId(r.try_get("id")?),
        centre_id: CentreId(r.try_get("centre_id")?),
        name: r.try_get("name")?,
        kind,
        kind_zh: kind.label_zh(),
        kind_en: kind.label_en(),
        capacity: r.try_get("capacity")?,
        enrolled: r.try_get("enrolled")?,
        closed_at_us: r.try_get("closed_at_us")?,
        updated_at_us: r.try_get("updated_at_us")?,
        updated_by: r.try_get("updated_by")?,
    })
}

fn period_from(r: &AnyRow) -> Result<PrivacyPeriod> {
    let days: String = r.try_get("weekdays")?;
    let weekdays = days
        .split(',')
        .map(Weekday::parse)
        .collect::<Result<Vec<_>>>()
        .map_err(|e| corrupt(format!("privacy_periods.weekdays: {e}")))?;
    let minute = |col: &str| -> Result<LocalTime> {
        LocalTime::from_minutes(r.try_get(col)?)
            .map_err(|e| corrupt(format!("privacy_periods.{col}: {e}")))
    };
    Ok(PrivacyPeriod {
        id: PrivacyPeriodId(r.try_get("id")?),
        classroom_id: ClassroomId(r.try_get("classroom_id")?),
        name: r.try_get("name")?,
        weekdays,
        start: minute("start_minute")?,
        end: minute("end_minute")?,
    })
}

fn area_from(r: &AnyRow) -> Result<Area> {
    Ok(Area {
        id: AreaId(r.try_get("id")?),
        centre_id: CentreId(r.try_get("centre_id")?),
        name: r.try_get("name")?,
        private: flag(r, "private")?,
        updated_at_us: r.try_get("updated_at_us")?,
        updated_by: r.try_get("updated_by")?,
    })
}

fn placement_from(r: &AnyRow) -> Result<CameraPlacement> {
    let id: String = r.try_get("camera_id")?;
    let camera_id =
        CameraId::parse(&id).map_err(|e| corrupt(format!("camera_placement.camera_id: {e}")))?;
    let classroom: Option<i64> = r.try_get("classroom_id")?;
    let area: Option<i64> = r.try_get("area_id")?;
    let placement = match (classroom, area) {
        (Some(c), _) => Placement::Classroom {
            classroom_id: ClassroomId(c),
        },
        (None, Some(a)) => Placement::Area { area_id: AreaId(a) },
        (None, None) => Placement::Unplaced,
    };
    let decommissioned = match r.try_get::<Option<i64>, _>("decommissioned_at_us")? {
        Some(at_us) => Some(Decommission {
            at_us,
            by: r.try_get("updated_by")?,
            reason: r
                .try_get::<Option<String>, _>("decommission_reason")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(CameraPlacement {
        camera_id,
        placement,
        parent_viewable: flag(r, "parent_viewable")?,
        decommissioned,
        updated_at_us: Some(r.try_get("updated_at_us")?),
        updated_by: Some(r.try_get("updated_by")?),
    })
}

macro_rules! placement_cols {
    () => {
        "camera_id, classroom_id, area_id, parent_viewable, decommissioned_at_us, decommission_reason, updated_at_us, updated_by"
    };
}

macro_rules! child_cols {
    () => {
        "k.id, k.centre_id, k.name, k.birth_date, k.classroom_id, k.enrolled_at_us, k.left_at_us, k.updated_at_us, k.updated_by"
    };
}

fn child_from(r: &AnyRow) -> Result<Child> {
    let birth: Option<String> = r.try_get("birth_date")?;
    let birth_date = birth
        .map(|b| BirthDate::parse(&b))
        .transpose()
        .map_err(|e| corrupt(format!("children.birth_date: {e}")))?;
    Ok(Child {
        id: ChildId(r.try_get("id")?),
        centre_id: CentreId(r.try_get("centre_id")?),
        name: r.try_get("name")?,
        birth_date,
        classroom_id: ClassroomId(r.try_get("classroom_id")?),
        enrolled_at_us: r.try_get("enrolled_at_us")?,
        left_at_us: r.try_get("left_at_us")?,
        updated_at_us: r.try_get("updated_at_us")?,
        updated_by: r.try_get("updated_by")?,
    })
}

macro_rules! guardian_cols {
    () => {
        "g.id, g.centre_id, g.username, g.display_name, g.updated_at_us, g.updated_by"
    };
}

fn guardian_from(r: &AnyRow) -> Result<Guardian> {
    Ok(Guardian {
        id: GuardianId(r.try_get("id")?),
        centre_id: CentreId(r.try_get("centre_id")?),
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        updated_at_us: r.try_get("updated_at_us")?,
        updated_by: r.try_get("updated_by")?,
    })
}

fn consent_from(r: &AnyRow) -> Result<ConsentRecord> {
    let state: String = r.try_get("state")?;
    Ok(ConsentRecord {
        guardian_id: GuardianId(r.try_get("guardian_id")?),
        child_id: ChildId(r.try_get("child_id")?),
        state: ConsentState::parse(&state).map_err(|e| corrupt(format!("consents.state: {e}")))?,
        at_us: r.try_get("at_us")?,
        by: r.try_get("by_actor")?,
        note: r.try_get("note")?,
    })
}

// Row locks. Each is the first touch of its row in a transaction (see the module doc)
// and doubles as the existence check.

async fn lock_centre(conn: &mut AnyConnection, id: CentreId) -> Result<Centre> {
    let n = sqlx::query("UPDATE centres SET updated_at_us = updated_at_us WHERE id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(CentreError::NotFound(format!("centre {id} does not exist")));
    }
    let r = sqlx::query("SELECT * FROM centres WHERE id = $1")
        .bind(id.0)
        .fetch_one(&mut *conn)
        .await?;
    centre_from(&r)
}

async fn lock_classroom(conn: &mut AnyConnection, id: ClassroomId) -> Result<Classroom> {
    let n = sqlx::query("UPDATE classrooms SET updated_at_us = updated_at_us WHERE id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(CentreError::NotFound(format!(
            "classroom {id} does not exist"
        )));
    }
    classroom_in(conn, id).await
}

async fn lock_area(conn: &mut AnyConnection, id: AreaId) -> Result<Area> {
    let n = sqlx::query("UPDATE areas SET updated_at_us = updated_at_us WHERE id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(CentreError::NotFound(format!("area {id} does not exist")));
    }
    let r = sqlx::query("SELECT * FROM areas WHERE id = $1")
        .bind(id.0)
        .fetch_one(&mut *conn)
        .await?;
    area_from(&r)
}

async fn classroom_in(conn: &mut AnyConnection, id: ClassroomId) -> Result<Classroom> {
    let r = sqlx::query(concat!(classroom_select!(), "WHERE c.id = $1"))
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| CentreError::NotFound(format!("classroom {id} does not exist")))?;
    classroom_from(&r)
}

/// An open classroom of `centre`, locked, that can take one more child.
async fn lock_room_with_a_place(
    conn: &mut AnyConnection,
    centre: CentreId,
    id: ClassroomId,
) -> Result<Classroom> {
    let room = lock_classroom(conn, id).await?;
    check_open(&room, centre)?;
    check_room_for_one_more(&room, room.enrolled)?;
    Ok(room)
}

fn check_open(room: &Classroom, centre: CentreId) -> Result<()> {
    if room.centre_id != centre {
        return Err(CentreError::Invalid(format!(
            "classroom {} belongs to another centre",
            room.id
        )));
    }
    if room.closed_at_us.is_some() {
        return Err(CentreError::Conflict(format!(
            "classroom {:?} is closed",
            room.name
        )));
    }
    Ok(())
}

/// The sum of the capacities of `centre`'s open classrooms, leaving out `except`.
async fn open_places(
    conn: &mut AnyConnection,
    centre: CentreId,
    except: Option<ClassroomId>,
) -> Result<i64> {
    let r = sqlx::query(
        "SELECT COALESCE(CAST(SUM(capacity) AS BIGINT), 0) AS places FROM classrooms
         WHERE centre_id = $1 AND closed_at_us IS NULL AND id <> $2",
    )
    .bind(centre.0)
    .bind(except.map_or(-1, |c| c.0))
    .fetch_one(&mut *conn)
    .await?;
    Ok(r.try_get("places")?)
}

async fn insert_move(
    conn: &mut AnyConnection,
    child: ChildId,
    from: Option<ClassroomId>,
    to: Option<ClassroomId>,
    stamp: Stamp<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO child_moves (child_id, from_classroom_id, to_classroom_id, at_us, by_actor)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(child.0)
    .bind(from.map(|c| c.0))
    .bind(to.map(|c| c.0))
    .bind(stamp.at_us)
    .bind(stamp.by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn current_consent_in(
    conn: &mut AnyConnection,
    guardian: GuardianId,
    child: ChildId,
) -> Result<Option<ConsentRecord>> {
    let r = sqlx::query(
        "SELECT guardian_id, child_id, state, at_us, by_actor, note FROM consents
         WHERE guardian_id = $1 AND child_id = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(guardian.0)
    .bind(child.0)
    .fetch_optional(&mut *conn)
    .await?;
    r.as_ref().map(consent_from).transpose()
}

async fn insert_consent(
    conn: &mut AnyConnection,
    guardian: GuardianId,
    child: ChildId,
    state: ConsentState,
    note: &str,
    stamp: Stamp<'_>,
) -> Result<ConsentRecord> {
    sqlx::query(
        "INSERT INTO consents (guardian_id, child_id, state, at_us, by_actor, note) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(guardian.0)
    .bind(child.0)
    .bind(state.as_str())
    .bind(stamp.at_us)
    .bind(stamp.by)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    Ok(ConsentRecord {
        guardian_id: guardian,
        child_id: child,
        state,
        at_us: stamp.at_us,
        by: stamp.by.to_owned(),
        note: note.to_owned(),
    })
}

// Declared after the macros above, which the submodules use.
mod cameras;
mod people;
mod rooms;

impl Db {
    /// A transaction for a change that checks a rule: on SQLite it holds the write lock
    /// from its first statement (see the module doc).
    async fn write_tx(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    // ----- the centre -----

    /// The deployment's centre (one per deployment for now: the oldest row, which the
    /// migration creates).
    pub async fn centre(&self) -> Result<Centre> {
        let r = sqlx::query("SELECT * FROM centres ORDER BY id LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                CentreError::NotFound("no centre exists (the 0003 migration makes one)".into())
            })?;
        centre_from(&r)
    }

    pub async fn centre_by_id(&self, id: CentreId) -> Result<Centre> {
        let r = sqlx::query("SELECT * FROM centres WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| CentreError::NotFound(format!("centre {id} does not exist")))?;
        centre_from(&r)
    }

    /// Renames the centre, sets its time zone (checked against the time zone database)
    /// and its viewing hours.
    pub async fn update_centre(
        &self,
        id: CentreId,
        u: &CentreUpdate,
        stamp: Stamp<'_>,
    ) -> Result<Centre> {
        let name = check_name("centre name", &u.name)?;
        let tz = CentreTimeZone::parse(u.time_zone.trim())?;
        let hours = serde_json::to_string(&u.viewing_hours)
            .map_err(|e| CentreError::Invalid(e.to_string()))?;
        let n = sqlx::query(
            "UPDATE centres SET name = $1, time_zone = $2, viewing_hours = $3, updated_at_us = $4, updated_by = $5
             WHERE id = $6",
        )
        .bind(&name)
        .bind(tz.name())
        .bind(&hours)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(id.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(CentreError::NotFound(format!("centre {id} does not exist")));
        }
        self.centre_by_id(id).await
    }

    /// Places used by the open classrooms and children enrolled, against the limit.
    pub async fn centre_places(&self, id: CentreId) -> Result<Places> {
        let r = sqlx::query(
            "SELECT COALESCE(CAST(SUM(capacity) AS BIGINT), 0) AS capacity,
                    (SELECT COUNT(*) FROM children k WHERE k.centre_id = $1 AND k.left_at_us IS NULL) AS enrolled
             FROM classrooms WHERE centre_id = $1 AND closed_at_us IS NULL",
        )
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(Places {
            capacity: r.try_get("capacity")?,
            enrolled: r.try_get("enrolled")?,
            limit: MAX_PLACES_PER_CENTRE,
        })
    }
}

pub use demo::DEMO_ACTOR;

/// The demo centre `cradle serve --demo` shows: three classrooms of different kinds,
/// an entrance and a private nappy-changing room, the five cameras of
/// `config/cradle.toml` (the nappy-room camera records but is never viewable),
/// children, and the demo parents with consent given.
mod demo {
    use super::*;

    pub const DEMO_ACTOR: &str = "demo";

    const CLASSROOMS: [(&str, ClassroomKind); 3] = [
        ("小星星 Little Stars", ClassroomKind::Infant),
        ("向日葵 Sunflowers", ClassroomKind::Toddler),
        ("彩虹 Rainbow", ClassroomKind::Preschool),
    ];
    const AREAS: [(&str, bool); 2] = [
        ("入口 Entrance", false),
        ("换尿布间 Nappy-changing room", true),
    ];
    /// Where a demo camera hangs: an index into `CLASSROOMS` or `AREAS`.
    enum Place {
        Room(usize),
        Area(usize),
    }
    /// (camera, place, parent-viewable)
    const CAMERAS: [(&str, Place, bool); 5] = [
        ("infant-room", Place::Room(0), true),
        ("toddler-room", Place::Room(1), true),
        ("preschool-room", Place::Room(2), true),
        ("entrance", Place::Area(0), false),
        ("nappy-room", Place::Area(1), false),
    ];
    /// (name, classroom index, birth date)
    const CHILDREN: [(&str, usize, &str); 6] = [
        ("王小宝 Wang Xiaobao", 0, "2025-07-12"),
        ("李朵朵 Li Duoduo", 0, "2025-09-03"),
        ("陈乐乐 Chen Lele", 1, "2024-11-20"),
        ("赵安安 Zhao An'an", 1, "2025-01-08"),
        ("孙悦悦 Sun Yueyue", 2, "2023-12-30"),
        ("周明明 Zhou Mingming", 2, "2024-03-15"),
    ];
    /// (account, display name, child index, relationship): the demo parent accounts.
    const GUARDIANS: [(&str, &str, usize, &str); 2] = [
        ("parent-infant", "王妈妈 Mrs Wang", 0, "mother"),
        ("parent-toddler", "陈爸爸 Mr Chen", 2, "father"),
    ];

    impl Db {
        /// Creates whatever of the demo centre is missing; running it again changes
        /// nothing. The centre's settings are only set while nobody has edited them, and
        /// its viewing hours are all day, every day, so the demo parent view plays at
        /// any hour; the toddler room has a weekday nap-time privacy period.
        pub async fn seed_demo_centre(&self, at_us: crate::time::WallUs) -> Result<Centre> {
            let stamp = Stamp {
                by: DEMO_ACTOR,
                at_us,
            };
            let mut centre = self.centre().await?;
            if centre.updated_by == MIGRATION_ACTOR {
                let u = CentreUpdate {
                    name: "摇篮示范托育园 Cradle demo centre".into(),
                    time_zone: DEFAULT_TIME_ZONE.into(),
                    viewing_hours: ViewingHours::on(
                        &Weekday::ALL,
                        LocalTime::MIDNIGHT,
                        LocalTime::END_OF_DAY,
                    )?,
                };
                centre = self.update_centre(centre.id, &u, stamp).await?;
            }
            let rooms = self.demo_classrooms(&centre, stamp).await?;
            let areas = self.demo_areas(&centre, stamp).await?;
            for (camera, place, viewable) in CAMERAS {
                let camera = CameraId::parse(camera).map_err(CentreError::Invalid)?;
                if self
                    .camera_placement(&camera)
                    .await?
                    .updated_at_us
                    .is_some()
                {
                    continue;
                }
                let placement = match place {
                    Place::Room(i) => Placement::Classroom {
                        classroom_id: rooms[i],
                    },
                    Place::Area(i) => Placement::Area { area_id: areas[i] },
                };
                let u = CameraUpdate {
                    placement: Some(placement),
                    parent_viewable: Some(viewable),
                };
                self.update_camera(centre.id, &camera, u, stamp).await?;
            }
            let children = self.demo_children(&centre, &rooms, stamp).await?;
            for (username, display_name, child, relationship) in GUARDIANS {
                let g = match self.guardian_by_username(centre.id, username).await? {
                    Some(g) => g,
                    None => {
                        let new = NewGuardian {
                            username: username.into(),
                            display_name: display_name.into(),
                        };
                        self.create_guardian(centre.id, &new, stamp).await?
                    }
                };
                let child = children[child];
                if self.guardian_link(g.id, child).await.is_err() {
                    self.link_guardian(g.id, child, relationship, stamp).await?;
                }
                if self.current_consent(g.id, child).await?.is_none() {
                    self.set_consent(
                        g.id,
                        child,
                        ConsentState::Given,
                        "demo: consent form signed",
                        stamp,
                    )
                    .await?;
                }
            }
            Ok(centre)
        }

        async fn demo_classrooms(
            &self,
            centre: &Centre,
            stamp: Stamp<'_>,
        ) -> Result<Vec<ClassroomId>> {
            let existing = self.list_classrooms(centre.id).await?;
            let mut ids = Vec::new();
            for (i, (name, kind)) in CLASSROOMS.into_iter().enumerate() {
                let id = match existing.iter().find(|c| c.name == name) {
                    Some(c) => c.id,
                    None => {
                        let new = NewClassroom {
                            name: name.into(),
                            kind,
                            capacity: None,
                        };
                        let room = self.create_classroom(centre.id, &new, stamp).await?;
                        if i == 1 {
                            let nap = NewPrivacyPeriod {
                                name: "午睡 Nap time".into(),
                                weekdays: Weekday::WORKDAYS.to_vec(),
                                start: LocalTime::hm(12, 30)?,
                                end: LocalTime::hm(14, 0)?,
                            };
                            self.add_privacy_period(room.id, &nap, stamp).await?;
                        }
                        room.id
                    }
                };
                ids.push(id);
            }
            Ok(ids)
        }

        async fn demo_areas(&self, centre: &Centre, stamp: Stamp<'_>) -> Result<Vec<AreaId>> {
            let existing = self.list_areas(centre.id).await?;
            let mut ids = Vec::new();
            for (name, private) in AREAS {
                let id = match existing.iter().find(|a| a.name == name) {
                    Some(a) => a.id,
                    None => {
                        self.create_area(
                            centre.id,
                            &NewArea {
                                name: name.into(),
                                private,
                            },
                            stamp,
                        )
                        .await?
                        .id
                    }
                };
                ids.push(id);
            }
            Ok(ids)
        }

        async fn demo_children(
            &self,
            centre: &Centre,
            rooms: &[ClassroomId],
            stamp: Stamp<'_>,
        ) -> Result<Vec<ChildId>> {
            let existing = self.list_children(centre.id, None).await?;
            let mut ids = Vec::new();
            for (name, room, born) in CHILDREN {
                let id = match existing.iter().find(|c| c.name == name) {
                    Some(c) => c.id,
                    None => {
                        let new = NewChild {
                            name: name.into(),
                            classroom_id: rooms[room],
                            birth_date: Some(BirthDate::parse(born)?),
                        };
                        self.enrol_child(centre.id, &new, stamp).await?.id
                    }
                };
                ids.push(id);
            }
            Ok(ids)
        }
    }
}
