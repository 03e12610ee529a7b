-- Police evidence (issue 6): requests approved by a second person, and exports.
-- See src/evidence/. Times are UTC microseconds.

-- A request for footage: a case, cameras, a time range and a reason. state: pending →
-- approved | rejected; approved → closed (holds released). "expired" is not stored: an
-- approved request whose expires_at_us has passed. Rows are never deleted.
CREATE TABLE evidence_requests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    case_ref        TEXT    NOT NULL,
    start_us        BIGINT  NOT NULL,
    end_us          BIGINT  NOT NULL,
    reason          TEXT    NOT NULL,
    requested_by    TEXT    NOT NULL,
    requested_at_us BIGINT  NOT NULL,
    state           TEXT    NOT NULL,
    decided_by      TEXT,
    decided_at_us   BIGINT,
    decision_note   TEXT,
    expires_at_us   BIGINT,
    closed_by       TEXT,
    closed_at_us    BIGINT,
    close_reason    TEXT,
    CHECK (start_us < end_us)
);
CREATE INDEX evidence_requests_by ON evidence_requests (requested_by);

CREATE TABLE evidence_request_cameras (
    request_id BIGINT NOT NULL REFERENCES evidence_requests (id),
    camera_id  TEXT   NOT NULL,
    PRIMARY KEY (request_id, camera_id)
);

-- One export: one camera's range of an approved request as an MP4 file with a signed
-- manifest (files under data_dir/exports/ID/). state: pending → ready | failed.
CREATE TABLE evidence_exports (
    id              TEXT    PRIMARY KEY,
    request_id      BIGINT  NOT NULL REFERENCES evidence_requests (id),
    camera_id       TEXT    NOT NULL,
    start_us        BIGINT  NOT NULL,
    end_us          BIGINT  NOT NULL,
    state           TEXT    NOT NULL,
    error           TEXT,
    created_by      TEXT    NOT NULL,
    created_at_us   BIGINT  NOT NULL,
    finished_at_us  BIGINT,
    bytes           BIGINT,
    sha256          TEXT,
    actual_start_us BIGINT,
    actual_end_us   BIGINT,
    hold_id         BIGINT
);
CREATE INDEX evidence_exports_request ON evidence_exports (request_id);
