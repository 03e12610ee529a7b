//! What live view asks of the database: which cameras a guardian's children's
//! classrooms have, whose consent is given, and who belongs to a family.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Db, Result};

/// A parent-viewable camera in the classroom of one of a guardian's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentCamera {
    pub camera_id: String,
    pub classroom_id: i64,
    pub classroom_name: String,
    /// The guardian's latest consent is `given` for at least one child in that classroom.
    pub consent_given: bool,
}

/// The latest consent decision of a guardian link `cg`, as a scalar subquery.
const LATEST_CONSENT: &str = "(SELECT s.state FROM consents s
     WHERE s.guardian_id = cg.guardian_id AND s.child_id = cg.child_id
     ORDER BY s.id DESC LIMIT 1)";

impl Db {
    /// Parent-viewable, working cameras in the classrooms of the children an account is a
    /// linked guardian of, whatever the consent (the page explains a missing one).
    pub async fn parent_cameras(&self, username: &str) -> Result<Vec<ParentCamera>> {
        let q = format!(
            "SELECT p.camera_id, c.id AS classroom_id, c.name AS classroom_name,
                    {LATEST_CONSENT} AS consent
             FROM guardians g
             JOIN child_guardians cg ON cg.guardian_id = g.id AND cg.unlinked_at_us IS NULL
             JOIN children k ON k.id = cg.child_id AND k.left_at_us IS NULL
             JOIN classrooms c ON c.id = k.classroom_id AND c.closed_at_us IS NULL
             JOIN camera_placement p ON p.classroom_id = c.id
             WHERE g.username = $1 AND p.parent_viewable = 1 AND p.decommissioned_at_us IS NULL"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q)).bind(username).fetch_all(&self.pool).await?;
        let mut by_camera: BTreeMap<String, ParentCamera> = BTreeMap::new();
        for r in rows {
            let camera_id: String = r.try_get("camera_id")?;
            let given = r.try_get::<Option<String>, _>("consent")?.as_deref() == Some("given");
            let e = by_camera.entry(camera_id.clone()).or_insert(ParentCamera {
                camera_id,
                classroom_id: r.try_get("classroom_id")?,
                classroom_name: r.try_get("classroom_name")?,
                consent_given: false,
            });
            e.consent_given |= given;
        }
        Ok(by_camera.into_values().collect())
    }

    /// Whether every child of the classroom has at least one linked guardian whose latest
    /// consent is `given` (a classroom camera shows every child in the room).
    pub async fn classroom_consented(&self, classroom_id: i64) -> Result<bool> {
        let q = format!(
            "SELECT COUNT(*) AS n FROM children k
             WHERE k.classroom_id = $1 AND k.left_at_us IS NULL
               AND NOT EXISTS (SELECT 1 FROM child_guardians cg
                               WHERE cg.child_id = k.id AND cg.unlinked_at_us IS NULL
                                 AND {LATEST_CONSENT} = 'given')"
        );
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(q)).bind(classroom_id).fetch_one(&self.pool).await?.try_get("n")?;
        Ok(n == 0)
    }

    /// The accounts of a family: every guardian sharing a child with `username`
    /// (including `username` when they are a guardian).
    pub async fn family_of(&self, username: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT g2.username FROM guardians g
             JOIN child_guardians cg ON cg.guardian_id = g.id AND cg.unlinked_at_us IS NULL
             JOIN child_guardians cg2 ON cg2.child_id = cg.child_id AND cg2.unlinked_at_us IS NULL
             JOIN guardians g2 ON g2.id = cg2.guardian_id
             WHERE g.username = $1 ORDER BY g2.username",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("username")?)).collect()
    }
}
