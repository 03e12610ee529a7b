-- Recorded segments: one row per stored (or still spooled) fMP4 object.
-- Times are UTC microseconds since the Unix epoch.
CREATE TABLE segments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id    TEXT    NOT NULL,
    start_us     BIGINT  NOT NULL,
    end_us       BIGINT  NOT NULL,
    duration_90k BIGINT  NOT NULL,
    bytes        BIGINT  NOT NULL,
    frames       BIGINT  NOT NULL,
    codec        TEXT    NOT NULL,
    object_key   TEXT    NOT NULL UNIQUE,
    sha256       TEXT    NOT NULL,
    run_id       TEXT    NOT NULL,
    drift_us     BIGINT  NOT NULL,
    state        TEXT    NOT NULL,      -- 'spooled' | 'stored'
    stored_at_us BIGINT
);
CREATE INDEX segments_camera_start ON segments (camera_id, start_us);
CREATE INDEX segments_state ON segments (state);

-- What happened to a camera or the server: the causes of gaps.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id TEXT,                     -- NULL: server-wide
    at_us     BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    detail    TEXT   NOT NULL
);
CREATE INDEX events_camera_at ON events (camera_id, at_us);
CREATE INDEX events_at ON events (at_us);

-- One row per server process run, with a heartbeat, so a crash is told from a clean stop.
CREATE TABLE server_runs (
    id         TEXT   PRIMARY KEY,
    started_us BIGINT NOT NULL,
    alive_us   BIGINT NOT NULL,
    stopped_us BIGINT
);
