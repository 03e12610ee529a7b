-- Alarms: anything that threatens the armed state. One live alarm per (camera, kind):
-- raised when the watchdog (or the reconciler, the sweeper, an admin's decommission)
-- sees the cause, cleared when the cause is gone, acknowledged by an operator with a
-- note. An alarm is over when it is both cleared and acknowledged; rows are never deleted.
CREATE TABLE alarms (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id        TEXT,                  -- NULL: server-wide (storage, spool)
    kind             TEXT    NOT NULL,
    detail           TEXT    NOT NULL,
    raised_at_us     BIGINT  NOT NULL,
    updated_at_us    BIGINT  NOT NULL,      -- detail last changed
    cleared_at_us    BIGINT,
    clear_detail     TEXT,
    acked_at_us      BIGINT,
    acked_by         TEXT,
    ack_note         TEXT,
    notified_at_us   BIGINT,                -- last delivery attempt of a (re)notification
    notify_count     BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX alarms_live ON alarms (camera_id, kind, cleared_at_us);
CREATE INDEX alarms_raised ON alarms (raised_at_us);
