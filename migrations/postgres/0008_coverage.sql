-- Proof of coverage (issue 4 point 8, src/coverage.rs): one row per camera per local
-- day once the day is closed (it ended, and none of its footage still waits in the
-- spool). The row is the day's answer — seconds recorded, every gap with its cause — so
-- it outlives the footage: the sweeper deletes segment rows after the retention period,
-- and a regulator asking about day 120 still gets the day as it was recorded.
--
-- `day` is the calendar date in `time_zone` (the centre's IANA zone when the row was
-- computed; a row of another zone is kept as history and not used). Times are UTC µs.
CREATE TABLE coverage_days (
    camera_id         TEXT    NOT NULL,
    time_zone         TEXT    NOT NULL,
    day               TEXT    NOT NULL,      -- YYYY-MM-DD
    start_us          BIGINT  NOT NULL,      -- the day's first instant
    end_us            BIGINT  NOT NULL,      -- the next day's first instant
    recorded_us       BIGINT  NOT NULL,
    gap_us            BIGINT  NOT NULL,      -- recorded_us + gap_us = end_us - start_us
    excused_us        BIGINT  NOT NULL,      -- gaps not counted against the camera
    first_recorded_us BIGINT,                -- NULL: nothing recorded that day
    last_recorded_us  BIGINT,
    segments          BIGINT  NOT NULL,      -- segment rows the day was computed from
    gaps              TEXT    NOT NULL,      -- JSON [{start_us, end_us, cause, detail}]
    stale             BIGINT  NOT NULL DEFAULT 0,
    computed_at_us    BIGINT  NOT NULL,
    PRIMARY KEY (camera_id, time_zone, day)
);
CREATE INDEX coverage_days_camera_start ON coverage_days (camera_id, start_us);
CREATE INDEX coverage_days_stale ON coverage_days (stale);
CREATE INDEX coverage_days_zone_day ON coverage_days (time_zone, day);

-- A segment indexed after its day was closed (reindex, the reconciler, a spool recovered
-- late) marks the day stale; the next read or ledger pass recomputes it and keeps
-- the union of what the row and the index say was recorded (footage the sweeper deleted
-- meanwhile stays recorded). Deleting segments never touches the ledger. The bound on
-- start_us keeps this a short range scan: a day is at most 25 hours long.
CREATE FUNCTION coverage_stale_on_segment() RETURNS trigger AS $$
BEGIN
    UPDATE coverage_days SET stale = 1
    WHERE camera_id = NEW.camera_id AND start_us < NEW.end_us AND end_us > NEW.start_us
      AND start_us > NEW.start_us - 90000000000;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER segments_stales_coverage AFTER INSERT OR UPDATE OF start_us, end_us ON segments
    FOR EACH ROW EXECUTE FUNCTION coverage_stale_on_segment();
