-- Retention (issue 4): per-camera retention for cameras added by an admin, and legal
-- holds. See src/retention/.

-- Days this added camera's footage is kept when longer than [retention] days; NULL: the
-- centre's. Never below the 90-day floor (checked where the value enters: API, CLI).
ALTER TABLE cameras ADD COLUMN retention_days BIGINT;

-- segments.state gains a third value, 'deleting': the sweeper marks a batch before it
-- deletes the batch's objects, and deletes the rows still marked afterwards, so a crash
-- at any step leaves rows the next sweep finishes (src/retention/sweeper.rs).

-- Footage of one camera over [start_us, end_us] (inclusive, UTC µs) kept whatever its
-- age while released_at_us is NULL. Rows are never deleted: a release is recorded.
CREATE TABLE legal_holds (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id      TEXT    NOT NULL,
    start_us       BIGINT  NOT NULL,
    end_us         BIGINT  NOT NULL,
    case_ref       TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    created_by     TEXT    NOT NULL,
    created_at_us  BIGINT  NOT NULL,
    released_at_us BIGINT,
    released_by    TEXT,
    release_reason TEXT,
    CHECK (start_us <= end_us)
);
CREATE INDEX legal_holds_camera_start ON legal_holds (camera_id, start_us);
