//! Snapshots and tamper checks: each camera's latest keyframe decoded every few seconds
//! (never every frame) into a JPEG for people and a small luma picture for the checks.

pub mod decode;
pub mod service;
pub mod tamper;
