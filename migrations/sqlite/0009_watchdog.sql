-- The watchdog (src/watchdog/): when each camera was first recorded. The sweeper
-- deletes old segment rows, so the index alone cannot tell a camera recording for a
-- year (whose oldest footage must reach back the full retention floor) from one added
-- last week; this row keeps the first recording's start for good. It is lowered when
-- older footage turns up (reindex) and never raised. Rows are never deleted.
CREATE TABLE camera_first_recorded (
    camera_id      TEXT    PRIMARY KEY,
    first_start_us BIGINT  NOT NULL,     -- start of the earliest footage ever indexed
    noted_at_us    BIGINT  NOT NULL      -- when the watchdog first saw it
);
