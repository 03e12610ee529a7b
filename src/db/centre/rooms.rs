//! Classrooms, their privacy periods, and areas.

use super::*;

impl Db {
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
}
