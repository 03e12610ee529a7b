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

    // ----- classrooms -----

    /// Opens a classroom. Its capacity defaults to its kind's maximum and counts toward
    /// the centre's 150 places.
    pub async fn create_classroom(
        &self,
        centre: CentreId,
        new: &NewClassroom,
        stamp: Stamp<'_>,
    ) -> Result<Classroom> {
        let name = check_name("classroom name", &new.name)?;
        let capacity = new.kind.check_capacity(new.capacity)?;
        let mut tx = self.write_tx().await?;
        let c = lock_centre(&mut tx, centre).await?;
        check_places(
            &c.name,
            open_places(&mut tx, centre, None).await? + capacity,
        )?;
        let id: i64 = sqlx::query(
            "INSERT INTO classrooms (centre_id, name, kind, capacity, created_at_us, updated_at_us, updated_by)
             VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id",
        )
        .bind(centre.0)
        .bind(&name)
        .bind(new.kind.as_str())
        .bind(capacity)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| taken(e, || format!("a classroom named {name:?} already exists")))?
        .try_get("id")?;
        let room = classroom_in(&mut tx, ClassroomId(id)).await?;
        tx.commit().await?;
        Ok(room)
    }

    /// Renames a classroom or changes its kind or capacity: the capacity must fit the
    /// kind, hold the children already enrolled, and keep the centre within 150 places.
    pub async fn update_classroom(
        &self,
        id: ClassroomId,
        u: &ClassroomUpdate,
        stamp: Stamp<'_>,
    ) -> Result<Classroom> {
        let name = check_name("classroom name", &u.name)?;
        let capacity = u.kind.check_capacity(u.capacity)?;
        // A classroom never changes centre, so reading it before the locks is safe.
        let centre = self.classroom(id).await?.centre_id;
        let mut tx = self.write_tx().await?;
        let c = lock_centre(&mut tx, centre).await?;
        let room = lock_classroom(&mut tx, id).await?;
        check_open(&room, centre)?;
        check_capacity_holds(&room.name, u.kind, capacity, room.enrolled)?;
        check_places(
            &c.name,
            open_places(&mut tx, centre, Some(id)).await? + capacity,
        )?;
        sqlx::query(
            "UPDATE classrooms SET name = $1, kind = $2, capacity = $3, updated_at_us = $4, updated_by = $5 WHERE id = $6",
        )
        .bind(&name)
        .bind(u.kind.as_str())
        .bind(capacity)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(|e| taken(e, || format!("a classroom named {name:?} already exists")))?;
        let room = classroom_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(room)
    }

    /// Closes an empty classroom (no child enrolled, no working camera placed). The row
    /// stays for the history of children and cameras; its places are freed.
    pub async fn close_classroom(&self, id: ClassroomId, stamp: Stamp<'_>) -> Result<Classroom> {
        let mut tx = self.write_tx().await?;
        let room = lock_classroom(&mut tx, id).await?;
        if room.closed_at_us.is_some() {
            return Ok(room);
        }
        if room.enrolled > 0 {
            return Err(CentreError::Conflict(format!(
                "classroom {:?} still has {} children enrolled: move them first",
                room.name, room.enrolled
            )));
        }
        let cams = sqlx::query(
            "SELECT camera_id FROM camera_placement
             WHERE classroom_id = $1 AND decommissioned_at_us IS NULL ORDER BY camera_id",
        )
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("camera_id"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
        if !cams.is_empty() {
            return Err(CentreError::Conflict(format!(
                "cameras {} are still placed in classroom {:?}: move or decommission them first",
                cams.join(", "),
                room.name
            )));
        }
        sqlx::query("UPDATE classrooms SET closed_at_us = $1, updated_at_us = $1, updated_by = $2 WHERE id = $3")
            .bind(stamp.at_us)
            .bind(stamp.by)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        let room = classroom_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(room)
    }

    pub async fn classroom(&self, id: ClassroomId) -> Result<Classroom> {
        let mut conn = self.pool.acquire().await?;
        classroom_in(&mut conn, id).await
    }

    /// The centre's open classrooms, by name.
    pub async fn list_classrooms(&self, centre: CentreId) -> Result<Vec<Classroom>> {
        let rows = sqlx::query(concat!(
            classroom_select!(),
            "WHERE c.centre_id = $1 AND c.closed_at_us IS NULL ORDER BY c.name"
        ))
        .bind(centre.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(classroom_from).collect()
    }

    // ----- privacy periods -----

    pub async fn add_privacy_period(
        &self,
        classroom: ClassroomId,
        new: &NewPrivacyPeriod,
        stamp: Stamp<'_>,
    ) -> Result<PrivacyPeriod> {
        let p = new.check()?;
        let room = self.classroom(classroom).await?;
        if room.closed_at_us.is_some() {
            return Err(CentreError::Conflict(format!(
                "classroom {:?} is closed",
                room.name
            )));
        }
        let days: Vec<&str> = p.weekdays.iter().map(|d| d.as_str()).collect();
        let r = sqlx::query(
            "INSERT INTO privacy_periods (classroom_id, name, weekdays, start_minute, end_minute, updated_at_us, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(classroom.0)
        .bind(&p.name)
        .bind(days.join(","))
        .bind(p.start.minutes())
        .bind(p.end.minutes())
        .bind(stamp.at_us)
        .bind(stamp.by)
        .fetch_one(&self.pool)
        .await?;
        Ok(PrivacyPeriod {
            id: PrivacyPeriodId(r.try_get("id")?),
            classroom_id: classroom,
            name: p.name,
            weekdays: p.weekdays,
            start: p.start,
            end: p.end,
        })
    }

    pub async fn privacy_periods(&self, classroom: ClassroomId) -> Result<Vec<PrivacyPeriod>> {
        let rows = sqlx::query(
            "SELECT * FROM privacy_periods WHERE classroom_id = $1 ORDER BY start_minute, id",
        )
        .bind(classroom.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(period_from).collect()
    }

    /// Removes a privacy period (a setting, not a record: the audit log keeps who did it).
    pub async fn delete_privacy_period(&self, id: PrivacyPeriodId) -> Result<()> {
        let n = sqlx::query("DELETE FROM privacy_periods WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        if n.rows_affected() == 0 {
            return Err(CentreError::NotFound(format!(
                "privacy period {id} does not exist"
            )));
        }
        Ok(())
    }

    // ----- areas -----

    pub async fn create_area(
        &self,
        centre: CentreId,
        new: &NewArea,
        stamp: Stamp<'_>,
    ) -> Result<Area> {
        let name = check_name("area name", &new.name)?;
        let r = sqlx::query(
            "INSERT INTO areas (centre_id, name, private, updated_at_us, updated_by) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(centre.0)
        .bind(&name)
        .bind(i64::from(new.private))
        .bind(stamp.at_us)
        .bind(stamp.by)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                CentreError::NotFound(format!("centre {centre} does not exist"))
            }
            e => taken(e, || format!("an area named {name:?} already exists")),
        })?;
        self.area(AreaId(r.try_get("id")?)).await
    }

    /// Renames an area or changes whether it is private. Marking it private FORCES every
    /// camera in it to not parent-viewable (rather than refusing): making a place private
    /// protects children, so it must never be blocked by the exposure it removes. The
    /// cameras switched off are returned so the caller can report and audit them.
    pub async fn update_area(
        &self,
        id: AreaId,
        u: &NewArea,
        stamp: Stamp<'_>,
    ) -> Result<(Area, Vec<CameraId>)> {
        let name = check_name("area name", &u.name)?;
        let mut tx = self.write_tx().await?;
        lock_area(&mut tx, id).await?;
        let mut switched_off = Vec::new();
        if u.private {
            let rows = sqlx::query(concat!(
                "SELECT ",
                placement_cols!(),
                " FROM camera_placement WHERE area_id = $1 AND parent_viewable = 1 ORDER BY camera_id"
            ))
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                switched_off.push(placement_from(r)?.camera_id);
            }
            sqlx::query(
                "UPDATE camera_placement SET parent_viewable = 0, updated_at_us = $1, updated_by = $2
                 WHERE area_id = $3 AND parent_viewable = 1",
            )
            .bind(stamp.at_us)
            .bind(stamp.by)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE areas SET name = $1, private = $2, updated_at_us = $3, updated_by = $4 WHERE id = $5")
            .bind(&name)
            .bind(i64::from(u.private))
            .bind(stamp.at_us)
            .bind(stamp.by)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, || format!("an area named {name:?} already exists")))?;
        let area = lock_area(&mut tx, id).await?;
        tx.commit().await?;
        Ok((area, switched_off))
    }

    pub async fn area(&self, id: AreaId) -> Result<Area> {
        let r = sqlx::query("SELECT * FROM areas WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| CentreError::NotFound(format!("area {id} does not exist")))?;
        area_from(&r)
    }

    pub async fn list_areas(&self, centre: CentreId) -> Result<Vec<Area>> {
        let rows = sqlx::query("SELECT * FROM areas WHERE centre_id = $1 ORDER BY name")
            .bind(centre.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(area_from).collect()
    }

    // ----- cameras -----

    /// A camera's placement; a camera without a row is unplaced and not viewable. This
    /// does not know whether the camera is in the config file: that is the caller's
    /// check (the config file decides which cameras exist).
    pub async fn camera_placement(&self, camera: &CameraId) -> Result<CameraPlacement> {
        let r = sqlx::query(concat!(
            "SELECT ",
            placement_cols!(),
            " FROM camera_placement WHERE camera_id = $1"
        ))
        .bind(camera.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match r {
            Some(r) => placement_from(&r),
            None => Ok(CameraPlacement::unplaced(camera.clone())),
        }
    }

    /// Every placement row of the centre, decommissioned ones included; join them with
    /// the config file through [`merge_cameras`].
    pub async fn camera_placements(&self, centre: CentreId) -> Result<Vec<CameraPlacement>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            placement_cols!(),
            " FROM camera_placement WHERE centre_id = $1 ORDER BY camera_id"
        ))
        .bind(centre.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(placement_from).collect()
    }

    /// Moves a camera and/or sets whether parents may view it. The result is checked
    /// as a whole: a camera in a private area is never viewable, a classroom must be
    /// open, and a decommissioned camera cannot change. If someone else changed the
    /// camera between the read and the write, this refuses rather than overwrite.
    pub async fn update_camera(
        &self,
        centre: CentreId,
        camera: &CameraId,
        u: CameraUpdate,
        stamp: Stamp<'_>,
    ) -> Result<CameraPlacement> {
        let before = self.camera_placement(camera).await?;
        refuse_if_decommissioned(&before)?;
        let placement = u.placement.unwrap_or(before.placement);
        let viewable = u.parent_viewable.unwrap_or(before.parent_viewable);
        let mut tx = self.write_tx().await?;
        // Container first, then the camera (the module's lock order).
        match placement {
            Placement::Classroom { classroom_id } => {
                check_open(&lock_classroom(&mut tx, classroom_id).await?, centre)?
            }
            Placement::Area { area_id } => {
                let area = lock_area(&mut tx, area_id).await?;
                if area.centre_id != centre {
                    return Err(CentreError::Invalid(format!(
                        "area {area_id} belongs to another centre"
                    )));
                }
                check_viewable_in(camera, Some(&area), viewable)?;
            }
            Placement::Unplaced => {}
        }
        let now = lock_camera(&mut tx, centre, camera, stamp).await?;
        if now.placement != before.placement
            || now.parent_viewable != before.parent_viewable
            || now.decommissioned != before.decommissioned
        {
            return Err(CentreError::Conflict(format!(
                "camera \"{camera}\" was changed by someone else meanwhile: reload and try again"
            )));
        }
        let (classroom_id, area_id) = match placement {
            Placement::Classroom { classroom_id } => (Some(classroom_id.0), None),
            Placement::Area { area_id } => (None, Some(area_id.0)),
            Placement::Unplaced => (None, None),
        };
        sqlx::query(
            "UPDATE camera_placement SET classroom_id = $1, area_id = $2, parent_viewable = $3,
                    updated_at_us = $4, updated_by = $5 WHERE camera_id = $6",
        )
        .bind(classroom_id)
        .bind(area_id)
        .bind(i64::from(viewable))
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(camera.as_str())
        .execute(&mut *tx)
        .await?;
        let after = lock_camera(&mut tx, centre, camera, stamp).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Records that a camera was taken out of service: who, when, why. It stops being
    /// viewable at once; its placement stays for the history, and nothing is deleted —
    /// footage keeps its retention. Recording is not touched here: the recorder follows
    /// the config file, and taking the camera out of `[[cameras]]` is what ends it.
    pub async fn decommission_camera(
        &self,
        centre: CentreId,
        camera: &CameraId,
        reason: &str,
        stamp: Stamp<'_>,
    ) -> Result<CameraPlacement> {
        let reason = check_reason(reason)?;
        let mut tx = self.write_tx().await?;
        let now = lock_camera(&mut tx, centre, camera, stamp).await?;
        refuse_if_decommissioned(&now)?;
        sqlx::query(
            "UPDATE camera_placement SET parent_viewable = 0, decommissioned_at_us = $1, decommission_reason = $2,
                    updated_at_us = $1, updated_by = $3 WHERE camera_id = $4",
        )
        .bind(stamp.at_us)
        .bind(&reason)
        .bind(stamp.by)
        .bind(camera.as_str())
        .execute(&mut *tx)
        .await?;
        // The event explains the camera's gaps from now on (coverage: `decommissioned`).
        sqlx::query("INSERT INTO events (camera_id, at_us, kind, detail) VALUES ($1, $2, 'decommissioned', $3)")
            .bind(camera.as_str())
            .bind(stamp.at_us)
            .bind(format!("decommissioned by {}: {reason}", stamp.by))
            .execute(&mut *tx)
            .await?;
        let after = lock_camera(&mut tx, centre, camera, stamp).await?;
        tx.commit().await?;
        Ok(after)
    }

    // ----- children -----

    /// Enrols a child in a classroom that has a free place.
    pub async fn enrol_child(
        &self,
        centre: CentreId,
        new: &NewChild,
        stamp: Stamp<'_>,
    ) -> Result<Child> {
        let name = check_name("child's name", &new.name)?;
        let mut tx = self.write_tx().await?;
        lock_room_with_a_place(&mut tx, centre, new.classroom_id).await?;
        let id: i64 = sqlx::query(
            "INSERT INTO children (centre_id, name, birth_date, classroom_id, enrolled_at_us, updated_at_us, updated_by)
             VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id",
        )
        .bind(centre.0)
        .bind(&name)
        .bind(new.birth_date.map(|d| d.to_string()))
        .bind(new.classroom_id.0)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        insert_move(&mut tx, ChildId(id), None, Some(new.classroom_id), stamp).await?;
        let child = child_in(&mut tx, ChildId(id)).await?;
        tx.commit().await?;
        Ok(child)
    }

    pub async fn update_child(
        &self,
        id: ChildId,
        u: &ChildUpdate,
        stamp: Stamp<'_>,
    ) -> Result<Child> {
        let name = check_name("child's name", &u.name)?;
        let n = sqlx::query("UPDATE children SET name = $1, birth_date = $2, updated_at_us = $3, updated_by = $4 WHERE id = $5")
            .bind(&name)
            .bind(u.birth_date.map(|d| d.to_string()))
            .bind(stamp.at_us)
            .bind(stamp.by)
            .bind(id.0)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(CentreError::NotFound(format!("child {id} does not exist")));
        }
        self.child(id).await
    }

    /// Moves a child to another classroom with a free place; the move is recorded.
    /// Which cameras the child's guardians may view follows at once.
    pub async fn move_child(
        &self,
        id: ChildId,
        to: ClassroomId,
        stamp: Stamp<'_>,
    ) -> Result<Child> {
        let before = self.child(id).await?;
        let from = before.classroom_id;
        if from == to {
            return Ok(before);
        }
        let mut tx = self.write_tx().await?;
        // Both classrooms, in id order, so two opposite moves cannot deadlock.
        let (first, second) = if from < to { (from, to) } else { (to, from) };
        lock_classroom(&mut tx, first).await?;
        lock_classroom(&mut tx, second).await?;
        let now = child_in(&mut tx, id).await?;
        if now.classroom_id != from {
            return Err(CentreError::Conflict(format!(
                "child {:?} was moved by someone else meanwhile: reload and try again",
                now.name
            )));
        }
        refuse_if_left(&now)?;
        lock_room_with_a_place(&mut tx, now.centre_id, to).await?;
        sqlx::query("UPDATE children SET classroom_id = $1, updated_at_us = $2, updated_by = $3 WHERE id = $4")
            .bind(to.0)
            .bind(stamp.at_us)
            .bind(stamp.by)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        insert_move(&mut tx, id, Some(from), Some(to), stamp).await?;
        let child = child_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(child)
    }

    /// Records that a child left the centre: their place is freed and their guardians
    /// stop seeing the classroom. The child's row and history stay.
    pub async fn child_left(&self, id: ChildId, stamp: Stamp<'_>) -> Result<Child> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE children SET left_at_us = $1, updated_at_us = $1, updated_by = $2 WHERE id = $3 AND left_at_us IS NULL",
        )
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let child = child_in(&mut tx, id).await?;
        if n == 0 {
            refuse_if_left(&child)?;
        }
        insert_move(&mut tx, id, Some(child.classroom_id), None, stamp).await?;
        tx.commit().await?;
        Ok(child)
    }

    pub async fn child(&self, id: ChildId) -> Result<Child> {
        let mut conn = self.pool.acquire().await?;
        child_in(&mut conn, id).await
    }

    /// Children at the centre now (not those who left), of one classroom or all, by name.
    pub async fn list_children(
        &self,
        centre: CentreId,
        classroom: Option<ClassroomId>,
    ) -> Result<Vec<Child>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            child_cols!(),
            " FROM children k WHERE k.centre_id = $1 AND k.left_at_us IS NULL AND ($2 < 0 OR k.classroom_id = $2)
             ORDER BY k.name, k.id"
        ))
        .bind(centre.0)
        .bind(classroom.map_or(-1, |c| c.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(child_from).collect()
    }

    /// A child's enrolment, moves and departure, oldest first.
    pub async fn child_moves(&self, id: ChildId) -> Result<Vec<ChildMove>> {
        let rows = sqlx::query(
            "SELECT from_classroom_id, to_classroom_id, at_us, by_actor FROM child_moves WHERE child_id = $1 ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChildMove {
                    from: r
                        .try_get::<Option<i64>, _>("from_classroom_id")?
                        .map(ClassroomId),
                    to: r
                        .try_get::<Option<i64>, _>("to_classroom_id")?
                        .map(ClassroomId),
                    at_us: r.try_get("at_us")?,
                    by: r.try_get("by_actor")?,
                })
            })
            .collect()
    }

    // ----- guardians and consent -----

    /// Registers an account (by username) as a guardian at the centre.
    pub async fn create_guardian(
        &self,
        centre: CentreId,
        new: &NewGuardian,
        stamp: Stamp<'_>,
    ) -> Result<Guardian> {
        let username = check_name("username", &new.username)?;
        let display_name = check_name("guardian's display name", &new.display_name)?;
        let r = sqlx::query(
            "INSERT INTO guardians (centre_id, username, display_name, updated_at_us, updated_by)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(centre.0)
        .bind(&username)
        .bind(&display_name)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            taken(e, || {
                format!("account {username:?} is already a guardian at this centre")
            })
        })?;
        self.guardian(GuardianId(r.try_get("id")?)).await
    }

    pub async fn update_guardian(
        &self,
        id: GuardianId,
        display_name: &str,
        stamp: Stamp<'_>,
    ) -> Result<Guardian> {
        let display_name = check_name("guardian's display name", display_name)?;
        let n = sqlx::query("UPDATE guardians SET display_name = $1, updated_at_us = $2, updated_by = $3 WHERE id = $4")
            .bind(&display_name)
            .bind(stamp.at_us)
            .bind(stamp.by)
            .bind(id.0)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(CentreError::NotFound(format!(
                "guardian {id} does not exist"
            )));
        }
        self.guardian(id).await
    }

    pub async fn guardian(&self, id: GuardianId) -> Result<Guardian> {
        let r = sqlx::query(concat!(
            "SELECT ",
            guardian_cols!(),
            " FROM guardians g WHERE g.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CentreError::NotFound(format!("guardian {id} does not exist")))?;
        guardian_from(&r)
    }

    pub async fn guardian_by_username(
        &self,
        centre: CentreId,
        username: &str,
    ) -> Result<Option<Guardian>> {
        let r = sqlx::query(concat!(
            "SELECT ",
            guardian_cols!(),
            " FROM guardians g WHERE g.centre_id = $1 AND g.username = $2"
        ))
        .bind(centre.0)
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(guardian_from).transpose()
    }

    pub async fn list_guardians(&self, centre: CentreId) -> Result<Vec<Guardian>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            guardian_cols!(),
            " FROM guardians g WHERE g.centre_id = $1 ORDER BY g.username"
        ))
        .bind(centre.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(guardian_from).collect()
    }

    /// Links a guardian to a child (or updates the relationship of an existing link, or
    /// restores an unlinked one). Linking grants nothing by itself: viewing needs
    /// consent given after the link.
    pub async fn link_guardian(
        &self,
        guardian: GuardianId,
        child: ChildId,
        relationship: &str,
        stamp: Stamp<'_>,
    ) -> Result<GuardianLink> {
        let relationship = check_name("relationship", relationship)?;
        let g = self.guardian(guardian).await?;
        let c = self.child(child).await?;
        if g.centre_id != c.centre_id {
            return Err(CentreError::Invalid(format!(
                "guardian {guardian} and child {child} are at different centres"
            )));
        }
        refuse_if_left(&c)?;
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE child_guardians SET relationship = $1,
                    linked_at_us = CASE WHEN unlinked_at_us IS NULL THEN linked_at_us ELSE $2 END,
                    linked_by = CASE WHEN unlinked_at_us IS NULL THEN linked_by ELSE $3 END,
                    unlinked_at_us = NULL, unlinked_by = NULL
             WHERE guardian_id = $4 AND child_id = $5",
        )
        .bind(&relationship)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(guardian.0)
        .bind(child.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            sqlx::query(
                "INSERT INTO child_guardians (guardian_id, child_id, relationship, linked_at_us, linked_by)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(guardian.0)
            .bind(child.0)
            .bind(&relationship)
            .bind(stamp.at_us)
            .bind(stamp.by)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.guardian_link(guardian, child).await
    }

    /// Ends a guardian's link to a child (custody change, a mistake). If consent was
    /// given, a `withdrawn` row is appended first, so relinking later needs fresh
    /// consent. The link row stays, with who unlinked it and when.
    pub async fn unlink_guardian(
        &self,
        guardian: GuardianId,
        child: ChildId,
        stamp: Stamp<'_>,
    ) -> Result<GuardianLink> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE child_guardians SET unlinked_at_us = $1, unlinked_by = $2
             WHERE guardian_id = $3 AND child_id = $4 AND unlinked_at_us IS NULL",
        )
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(guardian.0)
        .bind(child.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(CentreError::NotFound(format!(
                "guardian {guardian} is not linked to child {child}"
            )));
        }
        if current_consent_in(&mut tx, guardian, child)
            .await?
            .map(|c| c.state)
            == Some(ConsentState::Given)
        {
            insert_consent(
                &mut tx,
                guardian,
                child,
                ConsentState::Withdrawn,
                "guardian unlinked from child",
                stamp,
            )
            .await?;
        }
        tx.commit().await?;
        self.guardian_link(guardian, child).await
    }

    /// One link with its current consent.
    pub async fn guardian_link(
        &self,
        guardian: GuardianId,
        child: ChildId,
    ) -> Result<GuardianLink> {
        self.links(guardian.0, child.0).await?.pop().ok_or_else(|| {
            CentreError::NotFound(format!(
                "guardian {guardian} is not linked to child {child}"
            ))
        })
    }

    /// A child's guardians (current and unlinked), each with the current consent.
    pub async fn child_guardians(&self, child: ChildId) -> Result<Vec<GuardianLink>> {
        self.links(-1, child.0).await
    }

    /// Links of one child, or one (guardian, child) pair when `guardian_id` ≥ 0.
    async fn links(&self, guardian_id: i64, child_id: i64) -> Result<Vec<GuardianLink>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            guardian_cols!(),
            ", cg.child_id, cg.relationship, cg.linked_at_us, cg.linked_by, cg.unlinked_at_us
             FROM child_guardians cg JOIN guardians g ON g.id = cg.guardian_id
             WHERE cg.child_id = $1 AND ($2 < 0 OR cg.guardian_id = $2) ORDER BY g.username"
        ))
        .bind(child_id)
        .bind(guardian_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut conn = self.pool.acquire().await?;
        for r in &rows {
            let guardian = guardian_from(r)?;
            let child = ChildId(r.try_get("child_id")?);
            let consent = current_consent_in(&mut conn, guardian.id, child).await?;
            out.push(GuardianLink {
                guardian,
                child_id: child,
                relationship: r.try_get("relationship")?,
                linked_at_us: r.try_get("linked_at_us")?,
                linked_by: r.try_get("linked_by")?,
                unlinked_at_us: r.try_get("unlinked_at_us")?,
                consent,
            });
        }
        Ok(out)
    }

    /// Records a guardian's consent decision for one child. Every decision is a new row
    /// (PIPL: the history is the record); the latest is the current state.
    pub async fn set_consent(
        &self,
        guardian: GuardianId,
        child: ChildId,
        state: ConsentState,
        note: &str,
        stamp: Stamp<'_>,
    ) -> Result<ConsentRecord> {
        let note = note.trim();
        let mut tx = self.write_tx().await?;
        let link = sqlx::query(
            "SELECT unlinked_at_us FROM child_guardians WHERE guardian_id = $1 AND child_id = $2",
        )
        .bind(guardian.0)
        .bind(child.0)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            CentreError::NotFound(format!(
                "guardian {guardian} is not linked to child {child}"
            ))
        })?;
        if link.try_get::<Option<i64>, _>("unlinked_at_us")?.is_some()
            && state == ConsentState::Given
        {
            return Err(CentreError::Conflict(format!(
                "guardian {guardian} was unlinked from child {child}: link them again before recording consent"
            )));
        }
        let record = insert_consent(&mut tx, guardian, child, state, note, stamp).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn current_consent(
        &self,
        guardian: GuardianId,
        child: ChildId,
    ) -> Result<Option<ConsentRecord>> {
        let mut conn = self.pool.acquire().await?;
        current_consent_in(&mut conn, guardian, child).await
    }

    /// Every consent decision for a guardian and child, oldest first.
    pub async fn consent_history(
        &self,
        guardian: GuardianId,
        child: ChildId,
    ) -> Result<Vec<ConsentRecord>> {
        let rows = sqlx::query(
            "SELECT guardian_id, child_id, state, at_us, by_actor, note FROM consents
             WHERE guardian_id = $1 AND child_id = $2 ORDER BY id",
        )
        .bind(guardian.0)
        .bind(child.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent_from).collect()
    }

    /// The children an account is a linked guardian of (still at the centre), with
    /// their classroom and the current consent.
    pub async fn guardian_children(&self, username: &str) -> Result<Vec<GuardianChild>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            child_cols!(),
            ", c.name AS classroom_name, cg.relationship, cg.guardian_id
             FROM guardians g
             JOIN child_guardians cg ON cg.guardian_id = g.id AND cg.unlinked_at_us IS NULL
             JOIN children k ON k.id = cg.child_id AND k.left_at_us IS NULL
             JOIN classrooms c ON c.id = k.classroom_id
             WHERE g.username = $1 ORDER BY k.name, k.id"
        ))
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut conn = self.pool.acquire().await?;
        for r in &rows {
            let child = child_from(r)?;
            let consent =
                current_consent_in(&mut conn, GuardianId(r.try_get("guardian_id")?), child.id)
                    .await?;
            out.push(GuardianChild {
                child,
                classroom_name: r.try_get("classroom_name")?,
                relationship: r.try_get("relationship")?,
                consent,
            });
        }
        Ok(out)
    }

    /// The ids of the cameras an account may watch as a parent; see
    /// [`Db::viewable_cameras_of_guardian`] for the rule.
    pub async fn cameras_viewable_by_guardian(&self, username: &str) -> Result<Vec<CameraId>> {
        let mut ids: Vec<CameraId> = self
            .viewable_cameras_of_guardian(username)
            .await?
            .into_iter()
            .map(|c| c.camera_id)
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// The cameras an account may watch as a parent: parent-viewable, working cameras in
    /// the classroom of a child still at the centre, to whom the account is linked, with
    /// that link's latest consent `given`. Cameras in areas are never included (shared
    /// places show other children; private ones are never viewable). Time rules
    /// (viewing hours, privacy periods) are applied by the caller with
    /// [`viewing_status`] per classroom, hence the classroom in each answer.
    pub async fn viewable_cameras_of_guardian(
        &self,
        username: &str,
    ) -> Result<Vec<ViewableCamera>> {
        let rows = sqlx::query(
            "SELECT DISTINCT p.camera_id, c.id AS classroom_id, c.name AS classroom_name
             FROM guardians g
             JOIN child_guardians cg ON cg.guardian_id = g.id AND cg.unlinked_at_us IS NULL
             JOIN children k ON k.id = cg.child_id AND k.left_at_us IS NULL
             JOIN classrooms c ON c.id = k.classroom_id AND c.closed_at_us IS NULL
             JOIN camera_placement p ON p.classroom_id = c.id
             WHERE g.username = $1 AND p.parent_viewable = 1 AND p.decommissioned_at_us IS NULL
               AND (SELECT s.state FROM consents s
                    WHERE s.guardian_id = cg.guardian_id AND s.child_id = cg.child_id
                    ORDER BY s.id DESC LIMIT 1) = 'given'
             ORDER BY p.camera_id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("camera_id")?;
                Ok(ViewableCamera {
                    camera_id: CameraId::parse(&id)
                        .map_err(|e| corrupt(format!("camera_placement.camera_id: {e}")))?,
                    classroom_id: ClassroomId(r.try_get("classroom_id")?),
                    classroom_name: r.try_get("classroom_name")?,
                })
            })
            .collect()
    }
}

/// Makes sure the camera has a placement row and locks it; returns it as it is now.
async fn lock_camera(
    conn: &mut AnyConnection,
    centre: CentreId,
    camera: &CameraId,
    stamp: Stamp<'_>,
) -> Result<CameraPlacement> {
    sqlx::query(
        "INSERT INTO camera_placement (camera_id, centre_id, updated_at_us, updated_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (camera_id) DO NOTHING",
    )
    .bind(camera.as_str())
    .bind(centre.0)
    .bind(stamp.at_us)
    .bind(stamp.by)
    .execute(&mut *conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            CentreError::NotFound(format!("centre {centre} does not exist"))
        }
        e => e.into(),
    })?;
    sqlx::query("UPDATE camera_placement SET updated_at_us = updated_at_us WHERE camera_id = $1")
        .bind(camera.as_str())
        .execute(&mut *conn)
        .await?;
    let r = sqlx::query(concat!(
        "SELECT ",
        placement_cols!(),
        ", centre_id FROM camera_placement WHERE camera_id = $1"
    ))
    .bind(camera.as_str())
    .fetch_one(&mut *conn)
    .await?;
    if r.try_get::<i64, _>("centre_id")? != centre.0 {
        return Err(CentreError::Invalid(format!(
            "camera \"{camera}\" belongs to another centre"
        )));
    }
    placement_from(&r)
}

async fn child_in(conn: &mut AnyConnection, id: ChildId) -> Result<Child> {
    let r = sqlx::query(concat!(
        "SELECT ",
        child_cols!(),
        " FROM children k WHERE k.id = $1"
    ))
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| CentreError::NotFound(format!("child {id} does not exist")))?;
    child_from(&r)
}

fn refuse_if_decommissioned(p: &CameraPlacement) -> Result<()> {
    match &p.decommissioned {
        Some(d) => Err(CentreError::Conflict(format!(
            "camera \"{}\" was decommissioned by {} at {} ({}): its placement can no longer change",
            p.camera_id,
            d.by,
            crate::time::format_rfc3339(d.at_us),
            d.reason
        ))),
        None => Ok(()),
    }
}

fn refuse_if_left(c: &Child) -> Result<()> {
    if c.left_at_us.is_some() {
        return Err(CentreError::Conflict(format!(
            "child {:?} has left the centre",
            c.name
        )));
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<String> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(CentreError::Invalid(
            "decommissioning a camera needs a reason".into(),
        ));
    }
    if r.chars().count() > 1000 {
        return Err(CentreError::Invalid(
            "the reason is longer than 1000 characters".into(),
        ));
    }
    Ok(r.to_owned())
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
