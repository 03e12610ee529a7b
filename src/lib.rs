//! Cradle: an always-armed recorder and live-view server for childcare centres.
//!
//! The data flow, top to bottom (see README and ARCHITECTURE):
//! camera ─RTSP→ [`ingest`] → [`hub`] → [`record`] (segments → spool → uploader; ingest
//! and recorders on the batching [`capture`] thread)
//! → [`storage`] + [`db`] index; [`watchdog`] turns hub and spool counters into camera
//! health and [`alarms`]; [`coverage`] proves from the index, per camera and day, what
//! was recorded and why not; [`api`] serves state and recordings over HTTP;
//! [`camsim`] simulates cameras for the demo, tests and benchmarks.

pub mod alarms;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod camsim;
pub mod capture;
pub mod centre;
pub mod centre_cli;
pub mod cli_changes;
pub mod config;
pub mod coverage;
pub mod db;
pub mod demo;
pub mod evidence;
pub mod fleet;
pub mod gaps;
pub mod hub;
pub mod lifesign;
pub mod live;
pub mod pulse;
pub mod ingest;
pub mod record;
pub mod reindex;
pub mod retention;
pub mod snapshot;
pub mod storage;
pub mod time;
pub mod watchdog;
