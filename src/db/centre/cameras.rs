//! Camera placement and decommissioning.

use super::*;

impl Db {
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
        self.cameras_changed();
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
        self.cameras_changed();
        Ok(after)
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
