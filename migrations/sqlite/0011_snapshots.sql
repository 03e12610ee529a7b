-- Snapshots and tamper checks.
-- The picture a tamper alarm was raised on (the operator sees what the camera saw).
CREATE TABLE alarm_snapshots (
    alarm_id   INTEGER PRIMARY KEY REFERENCES alarms (id),
    taken_us   BIGINT  NOT NULL,            -- when the keyframe arrived
    jpeg       BLOB    NOT NULL
);
-- Per camera: thresholds an operator set (JSON; NULL = the config's [snapshots.tamper])
-- and the view an operator confirmed (160x90 luma; NULL = taken automatically).
CREATE TABLE camera_tamper (
    camera_id        TEXT    PRIMARY KEY,
    thresholds       TEXT,
    thresholds_by    TEXT,
    reference        BLOB,
    reference_width  BIGINT,
    reference_height BIGINT,
    confirmed_by     TEXT,
    confirmed_at_us  BIGINT,
    updated_at_us    BIGINT  NOT NULL
);
