//! Children, guardians and consent.

use super::*;

impl Db {
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

fn refuse_if_left(c: &Child) -> Result<()> {
    if c.left_at_us.is_some() {
        return Err(CentreError::Conflict(format!(
            "child {:?} has left the centre",
            c.name
        )));
    }
    Ok(())
}
