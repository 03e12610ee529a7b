-- The centre's model: classrooms, areas, where each camera hangs and whether parents may
-- watch it, children and their classroom moves, guardians and their consent (PIPL).
-- Times are UTC microseconds; `*_by` columns hold the acting account's username.
-- Booleans are BIGINT 0/1 on both back ends (sqlx's Any driver cannot read SQLite
-- BOOLEAN columns). Rows that record a decision are never deleted: classrooms close,
-- cameras are decommissioned, guardians are unlinked, consent rows are appended.

-- One centre per deployment for now; `centre_id` columns let several fit later.
CREATE TABLE centres (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT    NOT NULL,
    time_zone     TEXT    NOT NULL DEFAULT 'Asia/Shanghai',   -- IANA name
    viewing_hours TEXT    NOT NULL,   -- JSON: {"mon":{"start":"07:30","end":"18:00"},…}
    updated_at_us BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL
);
INSERT INTO centres (name, time_zone, viewing_hours, updated_at_us, updated_by)
VALUES ('Cradle centre', 'Asia/Shanghai',
        '{"mon":{"start":"07:30","end":"18:00"},"tue":{"start":"07:30","end":"18:00"},"wed":{"start":"07:30","end":"18:00"},"thu":{"start":"07:30","end":"18:00"},"fri":{"start":"07:30","end":"18:00"}}',
        0, 'migration');

CREATE TABLE classrooms (
    id            BIGSERIAL PRIMARY KEY,
    centre_id     BIGINT  NOT NULL REFERENCES centres (id),
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('infant', 'toddler', 'preschool')),
    capacity      BIGINT  NOT NULL CHECK (capacity BETWEEN 1 AND 20),
    created_at_us BIGINT  NOT NULL,
    updated_at_us BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL,
    closed_at_us  BIGINT              -- NULL: open; closed rooms keep their history
);
-- Names are unique among open classrooms; a closed room's name can be used again.
CREATE UNIQUE INDEX classrooms_centre_name ON classrooms (centre_id, name) WHERE closed_at_us IS NULL;

-- Nap time, toilet training…: no parent viewing of the classroom in these local times.
CREATE TABLE privacy_periods (
    id            BIGSERIAL PRIMARY KEY,
    classroom_id  BIGINT  NOT NULL REFERENCES classrooms (id),
    name          TEXT    NOT NULL,
    weekdays      TEXT    NOT NULL,   -- "mon,tue,wed,thu,fri"
    start_minute  BIGINT  NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute    BIGINT  NOT NULL CHECK (end_minute BETWEEN 1 AND 1440),  -- < start: crosses midnight
    updated_at_us BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL
);
CREATE INDEX privacy_periods_classroom ON privacy_periods (classroom_id);

-- Named non-classroom places. A private area (nappy-changing, toilets) can never have a
-- parent-viewable camera.
CREATE TABLE areas (
    id            BIGSERIAL PRIMARY KEY,
    centre_id     BIGINT  NOT NULL REFERENCES centres (id),
    name          TEXT    NOT NULL,
    private       BIGINT  NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
    updated_at_us BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL
);
CREATE UNIQUE INDEX areas_centre_name ON areas (centre_id, name);

-- Placement and viewing policy of a camera. Connection settings live in the config
-- file's [[cameras]], which wins for them; this row never starts or stops recording.
CREATE TABLE camera_placement (
    camera_id            TEXT    PRIMARY KEY,
    centre_id            BIGINT  NOT NULL REFERENCES centres (id),
    classroom_id         BIGINT  REFERENCES classrooms (id),
    area_id              BIGINT  REFERENCES areas (id),
    parent_viewable      BIGINT  NOT NULL DEFAULT 0 CHECK (parent_viewable IN (0, 1)),
    decommissioned_at_us BIGINT,
    decommission_reason  TEXT,
    updated_at_us        BIGINT  NOT NULL,
    updated_by           TEXT    NOT NULL,
    CHECK (classroom_id IS NULL OR area_id IS NULL)
);
CREATE INDEX camera_placement_classroom ON camera_placement (classroom_id);
CREATE INDEX camera_placement_area ON camera_placement (area_id);

CREATE TABLE children (
    id            BIGSERIAL PRIMARY KEY,
    centre_id     BIGINT  NOT NULL REFERENCES centres (id),
    name          TEXT    NOT NULL,
    birth_date    TEXT,               -- YYYY-MM-DD
    classroom_id  BIGINT  NOT NULL REFERENCES classrooms (id),
    enrolled_at_us BIGINT NOT NULL,
    left_at_us    BIGINT,             -- NULL: still at the centre
    updated_at_us BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL
);
CREATE INDEX children_classroom ON children (classroom_id);

-- Every enrolment, move between classrooms and departure, in order.
CREATE TABLE child_moves (
    id                BIGSERIAL PRIMARY KEY,
    child_id          BIGINT  NOT NULL REFERENCES children (id),
    from_classroom_id BIGINT  REFERENCES classrooms (id),   -- NULL: enrolment
    to_classroom_id   BIGINT  REFERENCES classrooms (id),   -- NULL: left the centre
    at_us             BIGINT  NOT NULL,
    by_actor          TEXT    NOT NULL
);
CREATE INDEX child_moves_child ON child_moves (child_id);

-- A guardian is an account (by username; accounts live in `users`) known to the centre.
CREATE TABLE guardians (
    id            BIGSERIAL PRIMARY KEY,
    centre_id     BIGINT  NOT NULL REFERENCES centres (id),
    username      TEXT    NOT NULL,
    display_name  TEXT    NOT NULL,
    updated_at_us BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL
);
CREATE UNIQUE INDEX guardians_centre_username ON guardians (centre_id, username);

CREATE TABLE child_guardians (
    guardian_id    BIGINT NOT NULL REFERENCES guardians (id),
    child_id       BIGINT NOT NULL REFERENCES children (id),
    relationship   TEXT   NOT NULL,   -- mother, father, grandmother…
    linked_at_us   BIGINT NOT NULL,
    linked_by      TEXT   NOT NULL,
    unlinked_at_us BIGINT,            -- NULL: linked
    unlinked_by    TEXT,
    PRIMARY KEY (guardian_id, child_id)
);
CREATE INDEX child_guardians_child ON child_guardians (child_id);

-- Consent to live viewing, per guardian and child: an append-only history (PIPL); the
-- row with the highest id is the current state, and no row is ever updated.
CREATE TABLE consents (
    id          BIGSERIAL PRIMARY KEY,
    guardian_id BIGINT NOT NULL,
    child_id    BIGINT NOT NULL,
    state       TEXT   NOT NULL CHECK (state IN ('given', 'withdrawn')),
    at_us       BIGINT NOT NULL,
    by_actor    TEXT   NOT NULL,
    note        TEXT   NOT NULL DEFAULT '',
    FOREIGN KEY (guardian_id, child_id) REFERENCES child_guardians (guardian_id, child_id)
);
CREATE INDEX consents_link ON consents (guardian_id, child_id, id);
