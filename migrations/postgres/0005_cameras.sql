-- Cameras added by an admin (API or `cradle centre camera-add`) rather than in the config
-- file. The config file wins: a row whose id is also in the config file is ignored while
-- the file names that camera. Rows are never deleted (a camera is decommissioned, and its
-- footage stays). The password is kept as given because the server must send it to the
-- camera; the API never returns it.
CREATE TABLE cameras (
    id             TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    url            TEXT    NOT NULL,
    sub_url        TEXT,
    username       TEXT,
    password       TEXT,
    transport      TEXT    NOT NULL,   -- tcp | udp
    created_at_us  BIGINT  NOT NULL,
    created_by     TEXT    NOT NULL,
    updated_at_us  BIGINT  NOT NULL,
    updated_by     TEXT    NOT NULL
);
