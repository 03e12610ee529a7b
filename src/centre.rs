//! The centre's model: classrooms of a regulated kind, named areas, where each camera
//! hangs and whether parents may watch it, children, guardians and their consent, and
//! the clock rules (viewing hours, privacy periods) that gate parent viewing.
//!
//! This module holds the types and the rules as pure functions; [`crate::db::centre`]
//! stores them and applies the rules inside transactions. The HTTP layer parses input
//! into the `New*`/`*Update` types, calls one `Db` method and maps [`CentreError`] to a
//! status (404 / 409 / 422 / 500).
//!
//! Which source wins for a camera: the config file's `[[cameras]]` owns connection
//! settings (id, name, URLs, credentials) and therefore what is recorded; the database
//! owns placement and viewing policy. A database row can never start or stop recording.

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use crate::config::{CameraConfig, CameraId};
use crate::db::DbError;
use crate::time::WallUs;

/// At most this many places per centre: the sum of the open classrooms' capacities.
pub const MAX_PLACES_PER_CENTRE: i64 = 150;

/// The default centre time zone; the source documents are Chinese local rules.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

/// Longest name (classroom, area, child, guardian, period) in characters.
const MAX_NAME_CHARS: usize = 100;

/// What went wrong, so the HTTP layer can answer 404 / 409 / 422 / 500.
#[derive(Debug, thiserror::Error)]
pub enum CentreError {
    /// The thing named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A rule of the centre forbids it in the current state (409): a full class, the
    /// 150-places limit, a viewable camera in a private area, a duplicate name.
    #[error("{0}")]
    Conflict(String),
    /// The input itself is wrong whatever the state (422): an empty name, a capacity
    /// above the kind's maximum, an unknown time zone.
    #[error("{0}")]
    Invalid(String),
    /// The database failed (500).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for CentreError {
    fn from(e: sqlx::Error) -> Self {
        CentreError::Db(DbError::Sqlx(e))
    }
}

pub type Result<T> = std::result::Result<T, CentreError>;

/// Who made a change and when, recorded on every row that changes.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    /// The acting account's username (or `"demo"`, `"migration"`, `"cli"`).
    pub by: &'a str,
    pub at_us: WallUs,
}

macro_rules! row_id {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

row_id!(
    CentreId,
    ClassroomId,
    AreaId,
    PrivacyPeriodId,
    ChildId,
    GuardianId
);

/// The three regulated classroom kinds and their maximum number of children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassroomKind {
    /// 乳儿班, 6–12 months, ≤ 10 children.
    Infant,
    /// 托小班, 1–2 years, ≤ 15 children.
    Toddler,
    /// 托大班, 2–3 years, ≤ 20 children.
    Preschool,
}

impl ClassroomKind {
    pub const ALL: [ClassroomKind; 3] = [
        ClassroomKind::Infant,
        ClassroomKind::Toddler,
        ClassroomKind::Preschool,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClassroomKind::Infant => "infant",
            ClassroomKind::Toddler => "toddler",
            ClassroomKind::Preschool => "preschool",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                CentreError::Invalid(format!(
                    "classroom kind {s:?} is not one of infant, toddler, preschool"
                ))
            })
    }

    pub fn max_children(self) -> i64 {
        match self {
            ClassroomKind::Infant => 10,
            ClassroomKind::Toddler => 15,
            ClassroomKind::Preschool => 20,
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            ClassroomKind::Infant => "乳儿班",
            ClassroomKind::Toddler => "托小班",
            ClassroomKind::Preschool => "托大班",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            ClassroomKind::Infant => "Infant class (6–12 months)",
            ClassroomKind::Toddler => "Toddler class (1–2 years)",
            ClassroomKind::Preschool => "Preschool class (2–3 years)",
        }
    }

    /// The capacity a classroom of this kind gets: its maximum unless set lower.
    pub fn check_capacity(self, capacity: Option<i64>) -> Result<i64> {
        let max = self.max_children();
        match capacity {
            None => Ok(max),
            Some(c) if (1..=max).contains(&c) => Ok(c),
            Some(c) => Err(CentreError::Invalid(format!(
                "capacity {c} is not allowed for a {} ({}): it must be 1 to {max}",
                self.label_zh(),
                self.as_str()
            ))),
        }
    }
}

impl fmt::Display for ClassroomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trimmed, non-empty name of at most 100 characters without control characters.
pub fn check_name(what: &str, s: &str) -> Result<String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(CentreError::Invalid(format!("{what} must not be empty")));
    }
    if t.chars().count() > MAX_NAME_CHARS {
        return Err(CentreError::Invalid(format!(
            "{what} {t:?} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(CentreError::Invalid(format!(
            "{what} {t:?} contains control characters"
        )));
    }
    Ok(t.to_owned())
}

/// The 150-places rule, given the places the centre would have after a change.
pub fn check_places(centre_name: &str, places: i64) -> Result<()> {
    if places > MAX_PLACES_PER_CENTRE {
        return Err(CentreError::Conflict(format!(
            "centre {centre_name:?} would have {places} places; the limit is {MAX_PLACES_PER_CENTRE}"
        )));
    }
    Ok(())
}

/// One more child in `room`, which has `enrolled` now.
pub fn check_room_for_one_more(room: &Classroom, enrolled: i64) -> Result<()> {
    if enrolled >= room.capacity {
        return Err(CentreError::Conflict(format!(
            "classroom {:?} ({}) is full: {enrolled} of {} children enrolled",
            room.name,
            room.kind.label_zh(),
            room.capacity
        )));
    }
    Ok(())
}

/// A new capacity must still hold the children already enrolled.
pub fn check_capacity_holds(
    name: &str,
    kind: ClassroomKind,
    capacity: i64,
    enrolled: i64,
) -> Result<()> {
    if enrolled > capacity {
        return Err(CentreError::Conflict(format!(
            "classroom {name:?} ({}) has {enrolled} children enrolled; its capacity cannot drop to {capacity}",
            kind.label_zh()
        )));
    }
    Ok(())
}

/// A camera in a private area (nappy-changing, toilets) can never be parent-viewable.
pub fn check_viewable_in(
    camera: &CameraId,
    area: Option<&Area>,
    parent_viewable: bool,
) -> Result<()> {
    match area {
        Some(a) if a.private && parent_viewable => Err(CentreError::Conflict(format!(
            "camera \"{camera}\" is in private area {:?}: it can never be viewable by parents",
            a.name
        ))),
        _ => Ok(()),
    }
}

/// A time of day in the centre's time zone, in whole minutes: `"07:30"`. `"24:00"` is
/// allowed so a day can end at midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(u16);

impl LocalTime {
    pub const MIDNIGHT: LocalTime = LocalTime(0);
    pub const END_OF_DAY: LocalTime = LocalTime(24 * 60);

    pub fn from_minutes(m: i64) -> Result<Self> {
        if (0..=24 * 60).contains(&m) {
            Ok(LocalTime(m as u16))
        } else {
            Err(CentreError::Invalid(format!(
                "{m} is not a minute of the day (0 to 1440)"
            )))
        }
    }

    pub fn hm(h: u16, m: u16) -> Result<Self> {
        if m < 60 {
            Self::from_minutes(i64::from(h) * 60 + i64::from(m))
        } else {
            Err(CentreError::Invalid(format!(
                "{h:02}:{m:02} is not a time of day"
            )))
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let bad =
            || CentreError::Invalid(format!("{s:?} is not a time of day HH:MM (00:00 to 24:00)"));
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        Self::hm(h, m).map_err(|_| bad())
    }

    pub fn minutes(self) -> i64 {
        i64::from(self.0)
    }

    /// This time on `date`; 24:00 is the next day's midnight.
    fn on(self, date: Date) -> DateTime {
        if self == Self::END_OF_DAY {
            date.tomorrow().unwrap_or(date).at(0, 0, 0, 0)
        } else {
            date.at((self.0 / 60) as i8, (self.0 % 60) as i8, 0, 0)
        }
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for LocalTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LocalTime::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    pub const WORKDAYS: [Weekday; 5] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                CentreError::Invalid(format!("{s:?} is not a weekday (mon, tue, … sun)"))
            })
    }

    pub fn of(date: Date) -> Weekday {
        Self::ALL[date.weekday().to_monday_zero_offset() as usize]
    }
}

/// One day's opening hours, `start` < `end` on the same day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHours")]
pub struct DayHours {
    pub start: LocalTime,
    pub end: LocalTime,
}

#[derive(Deserialize)]
struct RawHours {
    start: LocalTime,
    end: LocalTime,
}

impl TryFrom<RawHours> for DayHours {
    type Error = CentreError;
    fn try_from(r: RawHours) -> Result<Self> {
        DayHours::new(r.start, r.end)
    }
}

impl DayHours {
    pub fn new(start: LocalTime, end: LocalTime) -> Result<Self> {
        if start >= end {
            return Err(CentreError::Invalid(format!(
                "viewing hours {start}–{end}: the start must be before the end on the same day"
            )));
        }
        Ok(DayHours { start, end })
    }
}

/// When parents may watch, per weekday, in the centre's time zone. A weekday that is
/// absent is a day off. Stored as JSON: `{"mon":{"start":"07:30","end":"18:00"},…}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ViewingHours(pub BTreeMap<Weekday, DayHours>);

impl ViewingHours {
    /// The same hours on each of `days`.
    pub fn on(days: &[Weekday], start: LocalTime, end: LocalTime) -> Result<Self> {
        let hours = DayHours::new(start, end)?;
        Ok(ViewingHours(days.iter().map(|d| (*d, hours)).collect()))
    }

    /// Monday to Friday, 07:30–18:00: the default of a new centre.
    pub fn default_weekdays() -> Self {
        let hours = DayHours {
            start: LocalTime(7 * 60 + 30),
            end: LocalTime(18 * 60),
        };
        ViewingHours(Weekday::WORKDAYS.iter().map(|d| (*d, hours)).collect())
    }

    pub fn get(&self, day: Weekday) -> Option<DayHours> {
        self.0.get(&day).copied()
    }
}

/// An IANA time zone name, checked against the time zone database once, at the edge.
#[derive(Clone, Debug)]
pub struct CentreTimeZone {
    name: String,
    tz: TimeZone,
}

impl CentreTimeZone {
    pub fn parse(name: &str) -> Result<Self> {
        let tz = TimeZone::get(name).map_err(|e| {
            CentreError::Invalid(format!(
                "time zone {name:?} is not an IANA time zone name such as \"Asia/Shanghai\" ({e}; \
                 is the tzdata package installed?)"
            ))
        })?;
        Ok(CentreTimeZone {
            name: name.to_owned(),
            tz,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl PartialEq for CentreTimeZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Serialize for CentreTimeZone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Centre {
    pub id: CentreId,
    pub name: String,
    pub time_zone: CentreTimeZone,
    pub viewing_hours: ViewingHours,
    pub updated_at_us: WallUs,
    pub updated_by: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CentreUpdate {
    pub name: String,
    pub time_zone: String,
    pub viewing_hours: ViewingHours,
}

/// How the centre's places are used: `capacity` of `limit` places, `enrolled` children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Places {
    pub capacity: i64,
    pub enrolled: i64,
    pub limit: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Classroom {
    pub id: ClassroomId,
    pub centre_id: CentreId,
    pub name: String,
    pub kind: ClassroomKind,
    pub kind_zh: &'static str,
    pub kind_en: &'static str,
    pub capacity: i64,
    /// Children enrolled now (not those who left).
    pub enrolled: i64,
    pub closed_at_us: Option<WallUs>,
    pub updated_at_us: WallUs,
    pub updated_by: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewClassroom {
    pub name: String,
    pub kind: ClassroomKind,
    /// Defaults to the kind's maximum; may be lower, never higher.
    #[serde(default)]
    pub capacity: Option<i64>,
}

/// A classroom's new name, kind and capacity (`None`: the kind's maximum).
#[derive(Clone, Debug, Deserialize)]
pub struct ClassroomUpdate {
    pub name: String,
    pub kind: ClassroomKind,
    #[serde(default)]
    pub capacity: Option<i64>,
}

/// A recurring time without parent viewing of one classroom (nap time, toilet
/// training). `end` < `start` means it crosses midnight into the next day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrivacyPeriod {
    pub id: PrivacyPeriodId,
    pub classroom_id: ClassroomId,
    pub name: String,
    pub weekdays: Vec<Weekday>,
    pub start: LocalTime,
    pub end: LocalTime,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewPrivacyPeriod {
    pub name: String,
    pub weekdays: Vec<Weekday>,
    pub start: LocalTime,
    pub end: LocalTime,
}

impl NewPrivacyPeriod {
    /// A name, at least one weekday, and a non-empty span.
    pub fn check(&self) -> Result<NewPrivacyPeriod> {
        let name = check_name("privacy period name", &self.name)?;
        if self.weekdays.is_empty() {
            return Err(CentreError::Invalid(format!(
                "privacy period {name:?} has no weekdays"
            )));
        }
        if self.start == LocalTime::END_OF_DAY {
            return Err(CentreError::Invalid(format!(
                "privacy period {name:?} cannot start at 24:00"
            )));
        }
        if self.start == self.end || self.end == LocalTime::MIDNIGHT {
            return Err(CentreError::Invalid(format!(
                "privacy period {name:?} {}–{} is empty (end a day at 24:00, not 00:00)",
                self.start, self.end
            )));
        }
        let mut weekdays = self.weekdays.clone();
        weekdays.sort();
        weekdays.dedup();
        Ok(NewPrivacyPeriod {
            name,
            weekdays,
            start: self.start,
            end: self.end,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Area {
    pub id: AreaId,
    pub centre_id: CentreId,
    pub name: String,
    /// Nappy-changing, toilets: no camera here is ever parent-viewable.
    pub private: bool,
    pub updated_at_us: WallUs,
    pub updated_by: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewArea {
    pub name: String,
    #[serde(default)]
    pub private: bool,
}

/// Where a camera hangs: in one classroom, in one area, or not placed yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Unplaced,
    Classroom {
        classroom_id: ClassroomId,
    },
    Area {
        area_id: AreaId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decommission {
    pub at_us: WallUs,
    pub by: String,
    pub reason: String,
}

/// A camera's placement and viewing policy as the database holds it. A camera without
/// a row is unplaced and not viewable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CameraPlacement {
    #[serde(serialize_with = "camera_id_str")]
    pub camera_id: CameraId,
    pub placement: Placement,
    pub parent_viewable: bool,
    pub decommissioned: Option<Decommission>,
    pub updated_at_us: Option<WallUs>,
    pub updated_by: Option<String>,
}

impl CameraPlacement {
    pub fn unplaced(camera_id: CameraId) -> Self {
        CameraPlacement {
            camera_id,
            placement: Placement::Unplaced,
            parent_viewable: false,
            decommissioned: None,
            updated_at_us: None,
            updated_by: None,
        }
    }
}

/// The change an admin asks for; `None` leaves that part as it is.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct CameraUpdate {
    #[serde(default)]
    pub placement: Option<Placement>,
    #[serde(default)]
    pub parent_viewable: Option<bool>,
}

/// A camera as the admin sees it: the config file's identity joined with the
/// database's placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CentreCamera {
    #[serde(serialize_with = "camera_id_str")]
    pub id: CameraId,
    /// From `[[cameras]]` (or the admin-added camera); `None` when it is not recorded.
    pub name: Option<String>,
    /// Whether the camera is recorded now (named by the config file, or added by an
    /// admin). False for a placement row whose camera was removed from the config file:
    /// its row (and footage) stay.
    pub in_config: bool,
    pub placement: CameraPlacement,
}

/// Joins the config file's cameras with the database's placements. The config file
/// wins for what exists and how to reach it; the database only adds placement and
/// policy, so a camera in the config with no row is listed unplaced, and a row with
/// no camera in the config is listed with `in_config: false`.
pub fn merge_cameras(
    config: &[CameraConfig],
    placements: Vec<CameraPlacement>,
) -> Vec<CentreCamera> {
    let mut by_id: BTreeMap<CameraId, CameraPlacement> = placements
        .into_iter()
        .map(|p| (p.camera_id.clone(), p))
        .collect();
    let mut out: Vec<CentreCamera> = config
        .iter()
        .map(|c| CentreCamera {
            id: c.id.clone(),
            name: Some(c.name.clone()),
            in_config: true,
            placement: by_id
                .remove(&c.id)
                .unwrap_or_else(|| CameraPlacement::unplaced(c.id.clone())),
        })
        .collect();
    out.extend(by_id.into_values().map(|p| CentreCamera {
        id: p.camera_id.clone(),
        name: None,
        in_config: false,
        placement: p,
    }));
    out
}

fn camera_id_str<S: serde::Serializer>(
    id: &CameraId,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(id.as_str())
}

/// A child's date of birth, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BirthDate(pub Date);

impl BirthDate {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || CentreError::Invalid(format!("birth date {s:?} is not a date YYYY-MM-DD"));
        if s.len() != 10 {
            return Err(bad());
        }
        s.parse::<Date>().map(BirthDate).map_err(|_| bad())
    }
}

impl fmt::Display for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for BirthDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BirthDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BirthDate::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Child {
    pub id: ChildId,
    pub centre_id: CentreId,
    pub name: String,
    pub birth_date: Option<BirthDate>,
    /// The classroom now, or the last one if the child has left.
    pub classroom_id: ClassroomId,
    pub enrolled_at_us: WallUs,
    pub left_at_us: Option<WallUs>,
    pub updated_at_us: WallUs,
    pub updated_by: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewChild {
    pub name: String,
    pub classroom_id: ClassroomId,
    #[serde(default)]
    pub birth_date: Option<BirthDate>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChildUpdate {
    pub name: String,
    #[serde(default)]
    pub birth_date: Option<BirthDate>,
}

/// One line of a child's enrolment history: `from` `None` is the enrolment, `to`
/// `None` is leaving the centre.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChildMove {
    pub from: Option<ClassroomId>,
    pub to: Option<ClassroomId>,
    pub at_us: WallUs,
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Guardian {
    pub id: GuardianId,
    pub centre_id: CentreId,
    /// The account's username (accounts live in `users`; no foreign key, so a guardian
    /// can be registered before their account exists).
    pub username: String,
    pub display_name: String,
    pub updated_at_us: WallUs,
    pub updated_by: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewGuardian {
    pub username: String,
    pub display_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentState {
    Given,
    Withdrawn,
}

impl ConsentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Given => "given",
            ConsentState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "given" => Ok(ConsentState::Given),
            "withdrawn" => Ok(ConsentState::Withdrawn),
            _ => Err(CentreError::Invalid(format!(
                "consent state {s:?} is not given or withdrawn"
            ))),
        }
    }
}

/// One consent decision, as recorded (PIPL: who, when, what).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentRecord {
    pub guardian_id: GuardianId,
    pub child_id: ChildId,
    pub state: ConsentState,
    pub at_us: WallUs,
    pub by: String,
    pub note: String,
}

/// A guardian's link to a child with the current consent (`None`: never asked, which
/// counts as not given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardianLink {
    pub guardian: Guardian,
    pub child_id: ChildId,
    pub relationship: String,
    pub linked_at_us: WallUs,
    pub linked_by: String,
    pub unlinked_at_us: Option<WallUs>,
    pub consent: Option<ConsentRecord>,
}

/// A child as their guardian sees them: with the classroom and the current consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardianChild {
    pub child: Child,
    pub classroom_name: String,
    pub relationship: String,
    pub consent: Option<ConsentRecord>,
}

/// A camera a guardian may watch, with the classroom whose privacy periods apply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ViewableCamera {
    #[serde(serialize_with = "camera_id_str")]
    pub camera_id: CameraId,
    pub classroom_id: ClassroomId,
    pub classroom_name: String,
}

/// Whether parents may watch a classroom now, and until when that stays so. Every
/// `until` is the next change of state in the centre's time zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewingStatus {
    /// Within viewing hours and no privacy period: open until closing or the next
    /// privacy period, whichever comes first.
    Open { until: Zoned },
    /// Outside viewing hours (or a day off); opens again at `until`.
    ClosedUntil(Zoned),
    /// Within viewing hours but in a privacy period (overlapping or back-to-back periods
    /// are one); it ends at `until`, or at closing time if that is earlier.
    PrivacyUntil { period: String, until: Zoned },
    /// No viewing hours on any day: parent viewing is off.
    Closed,
}

impl Serialize for ViewingStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let local = |z: &Zoned| z.timestamp().display_with_offset(z.offset()).to_string();
        let mut m = s.serialize_map(None)?;
        match self {
            ViewingStatus::Open { until } => {
                m.serialize_entry("state", "open")?;
                m.serialize_entry("until", &local(until))?;
            }
            ViewingStatus::ClosedUntil(until) => {
                m.serialize_entry("state", "closed")?;
                m.serialize_entry("until", &local(until))?;
            }
            ViewingStatus::PrivacyUntil { period, until } => {
                m.serialize_entry("state", "privacy")?;
                m.serialize_entry("period", period)?;
                m.serialize_entry("until", &local(until))?;
            }
            ViewingStatus::Closed => {
                m.serialize_entry("state", "closed")?;
                m.serialize_entry("until", &None::<String>)?;
            }
        }
        m.end()
    }
}

/// A privacy period on one concrete day, in local wall time.
struct Occurrence<'a> {
    name: &'a str,
    start: DateTime,
    end: DateTime,
}

/// Occurrences of `periods` starting on the days from `first` through `last`.
fn occurrences<'a>(periods: &'a [PrivacyPeriod], first: Date, last: Date) -> Vec<Occurrence<'a>> {
    let mut out = Vec::new();
    let mut day = first;
    while day <= last {
        for p in periods
            .iter()
            .filter(|p| p.weekdays.contains(&Weekday::of(day)))
        {
            let start = p.start.on(day);
            let end_day = if p.end <= p.start {
                day.tomorrow().unwrap_or(day)
            } else {
                day
            };
            out.push(Occurrence {
                name: &p.name,
                start,
                end: p.end.on(end_day),
            });
        }
        match day.tomorrow() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    out
}

/// Local wall time to an instant; in a DST gap or fold, jiff's "compatible" choice.
fn zoned(tz: &TimeZone, dt: DateTime) -> Zoned {
    tz.to_zoned(dt)
        .unwrap_or_else(|_| Timestamp::MAX.to_zoned(tz.clone()))
}

/// The next opening strictly after `now` within a week, if the centre ever opens.
fn next_opening(hours: &ViewingHours, now: DateTime) -> Option<DateTime> {
    let mut day = now.date();
    for _ in 0..=7 {
        if let Some(h) = hours.get(Weekday::of(day)) {
            let open = h.start.on(day);
            if open > now {
                return Some(open);
            }
        }
        day = day.tomorrow().ok()?;
    }
    None
}

/// Whether parents may watch a classroom with `privacy` periods at `now_us`, under the
/// centre's viewing hours and time zone. Pure: the caller supplies the clock.
///
/// Rules: outside viewing hours it is closed (privacy periods do not matter); within
/// them, a privacy period covering now wins; otherwise it is open. Times are compared
/// as local wall time, so "12:00–14:00" means noon to two on the centre's clock on
/// every day, across DST changes.
pub fn viewing_status(centre: &Centre, privacy: &[PrivacyPeriod], now_us: WallUs) -> ViewingStatus {
    let tz = centre.time_zone.tz();
    let now = match Timestamp::from_microsecond(now_us) {
        Ok(t) => t.to_zoned(tz.clone()).datetime(),
        Err(_) => return ViewingStatus::Closed,
    };
    let today = now.date();
    let open_today = centre
        .viewing_hours
        .get(Weekday::of(today))
        .filter(|h| h.start.on(today) <= now && now < h.end.on(today));
    let Some(hours) = open_today else {
        return match next_opening(&centre.viewing_hours, now) {
            Some(open) => ViewingStatus::ClosedUntil(zoned(tz, open)),
            None => ViewingStatus::Closed,
        };
    };
    let close = hours.end.on(today);
    let yesterday = today.yesterday().unwrap_or(today);
    let tomorrow = today.tomorrow().unwrap_or(today);
    let occ = occurrences(privacy, yesterday, tomorrow);
    let active = occ
        .iter()
        .filter(|o| o.start <= now && now < o.end)
        .max_by_key(|o| o.end);
    match active {
        Some(first) => {
            // Follow overlapping or back-to-back periods to where privacy really ends.
            let mut end = first.end;
            while let Some(next) = occ
                .iter()
                .filter(|o| o.start <= end && o.end > end)
                .max_by_key(|o| o.end)
            {
                end = next.end;
            }
            ViewingStatus::PrivacyUntil {
                period: first.name.to_owned(),
                until: zoned(tz, end.min(close)),
            }
        }
        None => {
            let next_privacy = occ.iter().map(|o| o.start).filter(|s| *s > now).min();
            let until = next_privacy.map_or(close, |s| s.min(close));
            ViewingStatus::Open {
                until: zoned(tz, until),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> LocalTime {
        LocalTime::parse(s).unwrap()
    }

    fn centre(tz: &str, hours: ViewingHours) -> Centre {
        Centre {
            id: CentreId(1),
            name: "Test".into(),
            time_zone: CentreTimeZone::parse(tz).unwrap(),
            viewing_hours: hours,
            updated_at_us: 0,
            updated_by: "test".into(),
        }
    }

    fn period(name: &str, days: &[Weekday], start: &str, end: &str) -> PrivacyPeriod {
        PrivacyPeriod {
            id: PrivacyPeriodId(1),
            classroom_id: ClassroomId(1),
            name: name.into(),
            weekdays: days.to_vec(),
            start: t(start),
            end: t(end),
        }
    }

    /// UTC microseconds of a local wall time in `tz`.
    fn at(tz: &str, local: &str) -> WallUs {
        let dt: DateTime = local.parse().unwrap();
        dt.to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
            .as_microsecond()
    }

    fn local(z: &Zoned) -> String {
        z.datetime().to_string()
    }

    fn status(
        c: &Centre,
        p: &[PrivacyPeriod],
        when: &str,
    ) -> (String, Option<String>, Option<String>) {
        match viewing_status(c, p, at(c.time_zone.name(), when)) {
            ViewingStatus::Open { until } => ("open".into(), Some(local(&until)), None),
            ViewingStatus::ClosedUntil(until) => ("closed".into(), Some(local(&until)), None),
            ViewingStatus::PrivacyUntil { period, until } => {
                ("privacy".into(), Some(local(&until)), Some(period))
            }
            ViewingStatus::Closed => ("closed".into(), None, None),
        }
    }

    fn s(
        state: &str,
        until: &str,
        period: Option<&str>,
    ) -> (String, Option<String>, Option<String>) {
        (state.into(), Some(until.into()), period.map(Into::into))
    }

    // 2026-03-02 is a Monday; 2026-03-06 a Friday.
    #[test]
    fn open_during_weekday_hours_until_closing() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        assert_eq!(
            status(&c, &[], "2026-03-02T09:00"),
            s("open", "2026-03-02T18:00:00", None)
        );
        assert_eq!(
            status(&c, &[], "2026-03-02T07:30"),
            s("open", "2026-03-02T18:00:00", None)
        );
    }

    #[test]
    fn closed_before_opening_and_after_closing() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        assert_eq!(
            status(&c, &[], "2026-03-02T07:29:59"),
            s("closed", "2026-03-02T07:30:00", None)
        );
        assert_eq!(
            status(&c, &[], "2026-03-02T18:00"),
            s("closed", "2026-03-03T07:30:00", None)
        );
    }

    #[test]
    fn days_off_close_until_the_next_working_day() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        assert_eq!(
            status(&c, &[], "2026-03-06T19:00"),
            s("closed", "2026-03-09T07:30:00", None)
        );
        assert_eq!(
            status(&c, &[], "2026-03-07T10:00"),
            s("closed", "2026-03-09T07:30:00", None)
        );
        assert_eq!(
            status(&c, &[], "2026-03-08T23:59"),
            s("closed", "2026-03-09T07:30:00", None)
        );
    }

    #[test]
    fn no_viewing_hours_means_closed_for_good() {
        let c = centre("Asia/Shanghai", ViewingHours::default());
        assert_eq!(
            viewing_status(&c, &[], at("Asia/Shanghai", "2026-03-02T09:00")),
            ViewingStatus::Closed
        );
    }

    #[test]
    fn the_centre_time_zone_decides_not_utc() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        // 01:00 UTC on Monday is 09:00 in Shanghai.
        let now = at("UTC", "2026-03-02T01:00");
        assert!(matches!(
            viewing_status(&c, &[], now),
            ViewingStatus::Open { .. }
        ));
        // 23:00 UTC on Sunday is already Monday 07:00 in Shanghai: opens in 30 minutes.
        let now = at("UTC", "2026-03-01T23:00");
        match viewing_status(&c, &[], now) {
            ViewingStatus::ClosedUntil(z) => assert_eq!(
                z.timestamp().as_microsecond(),
                at("UTC", "2026-03-01T23:30")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nap_time_is_a_privacy_period_then_open_again() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        let nap = [period("午睡 Nap", &Weekday::WORKDAYS, "12:00", "14:00")];
        assert_eq!(
            status(&c, &nap, "2026-03-02T11:00"),
            s("open", "2026-03-02T12:00:00", None)
        );
        assert_eq!(
            status(&c, &nap, "2026-03-02T12:00"),
            s("privacy", "2026-03-02T14:00:00", Some("午睡 Nap"))
        );
        assert_eq!(
            status(&c, &nap, "2026-03-02T14:00"),
            s("open", "2026-03-02T18:00:00", None)
        );
    }

    #[test]
    fn privacy_periods_apply_only_on_their_weekdays() {
        let c = centre(
            "Asia/Shanghai",
            ViewingHours::on(&Weekday::ALL, t("08:00"), t("20:00")).unwrap(),
        );
        let nap = [period("Nap", &Weekday::WORKDAYS, "12:00", "14:00")];
        assert_eq!(
            status(&c, &nap, "2026-03-07T12:30"),
            s("open", "2026-03-07T20:00:00", None)
        );
    }

    #[test]
    fn overlapping_and_back_to_back_periods_are_one() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        let p = [
            period("Nap", &Weekday::WORKDAYS, "12:00", "14:00"),
            period("Changing", &Weekday::WORKDAYS, "13:30", "14:15"),
            period("Story", &Weekday::WORKDAYS, "14:15", "14:30"),
        ];
        assert_eq!(
            status(&c, &p, "2026-03-02T12:10"),
            s("privacy", "2026-03-02T14:30:00", Some("Nap"))
        );
        // Both Nap and Changing are active: the one lasting longer names it.
        assert_eq!(
            status(&c, &p, "2026-03-02T13:45"),
            s("privacy", "2026-03-02T14:30:00", Some("Changing"))
        );
    }

    #[test]
    fn a_privacy_period_running_past_closing_ends_at_closing() {
        let c = centre("Asia/Shanghai", ViewingHours::default_weekdays());
        let p = [period("Cleaning", &Weekday::WORKDAYS, "17:30", "19:00")];
        assert_eq!(
            status(&c, &p, "2026-03-02T17:45"),
            s("privacy", "2026-03-02T18:00:00", Some("Cleaning"))
        );
        assert_eq!(
            status(&c, &p, "2026-03-02T17:00"),
            s("open", "2026-03-02T17:30:00", None)
        );
    }

    #[test]
    fn a_period_crossing_midnight_covers_the_next_morning() {
        let c = centre(
            "Asia/Shanghai",
            ViewingHours::on(&Weekday::ALL, t("00:00"), t("24:00")).unwrap(),
        );
        let night = [period("Night", &[Weekday::Mon], "22:00", "06:00")];
        assert_eq!(
            status(&c, &night, "2026-03-02T23:00"),
            s("privacy", "2026-03-03T00:00:00", Some("Night"))
        );
        // Tuesday 05:00 is still Monday's night period.
        assert_eq!(
            status(&c, &night, "2026-03-03T05:00"),
            s("privacy", "2026-03-03T06:00:00", Some("Night"))
        );
        assert_eq!(
            status(&c, &night, "2026-03-03T06:00"),
            s("open", "2026-03-04T00:00:00", None)
        );
        // Wednesday 05:00: no period started on Tuesday.
        assert_eq!(
            status(&c, &night, "2026-03-04T05:00"),
            s("open", "2026-03-05T00:00:00", None)
        );
    }

    #[test]
    fn wall_time_rules_hold_across_daylight_saving_changes() {
        // 2026-03-08 is the US spring-forward day; hours are 08:00–17:00 local every day.
        let c = centre(
            "America/New_York",
            ViewingHours::on(&Weekday::ALL, t("08:00"), t("17:00")).unwrap(),
        );
        assert_eq!(
            status(&c, &[], "2026-03-08T07:00"),
            s("closed", "2026-03-08T08:00:00", None)
        );
        assert_eq!(
            status(&c, &[], "2026-03-08T16:59"),
            s("open", "2026-03-08T17:00:00", None)
        );
    }

    #[test]
    fn class_kinds_have_their_caps_and_labels() {
        assert_eq!(ClassroomKind::Infant.max_children(), 10);
        assert_eq!(ClassroomKind::Toddler.max_children(), 15);
        assert_eq!(ClassroomKind::Preschool.max_children(), 20);
        assert_eq!(ClassroomKind::Toddler.label_zh(), "托小班");
        assert_eq!(
            ClassroomKind::parse("preschool").unwrap(),
            ClassroomKind::Preschool
        );
        assert!(matches!(
            ClassroomKind::parse("nursery"),
            Err(CentreError::Invalid(_))
        ));
        assert_eq!(
            serde_json::to_string(&ClassroomKind::Infant).unwrap(),
            "\"infant\""
        );
    }

    #[test]
    fn capacity_defaults_to_the_kind_maximum_and_never_exceeds_it() {
        assert_eq!(ClassroomKind::Toddler.check_capacity(None).unwrap(), 15);
        assert_eq!(ClassroomKind::Toddler.check_capacity(Some(12)).unwrap(), 12);
        let e = ClassroomKind::Toddler
            .check_capacity(Some(16))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "capacity 16 is not allowed for a 托小班 (toddler): it must be 1 to 15"
        );
        assert!(ClassroomKind::Infant.check_capacity(Some(0)).is_err());
    }

    #[test]
    fn the_places_limit_message_names_the_centre_and_the_numbers() {
        assert!(check_places("X", 150).is_ok());
        assert_eq!(
            check_places("X", 160).unwrap_err().to_string(),
            "centre \"X\" would have 160 places; the limit is 150"
        );
    }

    #[test]
    fn local_times_parse_strictly() {
        assert_eq!(t("07:30").minutes(), 450);
        assert_eq!(t("24:00"), LocalTime::END_OF_DAY);
        for bad in ["7:30", "24:01", "12:60", "noon", "12-00", ""] {
            assert!(LocalTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn viewing_hours_round_trip_as_json_and_reject_inverted_days() {
        let h = ViewingHours::default_weekdays();
        let json = serde_json::to_string(&h).unwrap();
        assert!(
            json.starts_with(r#"{"mon":{"start":"07:30","end":"18:00"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ViewingHours>(&json).unwrap(), h);
        assert!(
            serde_json::from_str::<ViewingHours>(r#"{"mon":{"start":"18:00","end":"07:30"}}"#)
                .is_err()
        );
    }

    #[test]
    fn privacy_periods_need_a_name_days_and_a_span() {
        let ok = NewPrivacyPeriod {
            name: " Nap ".into(),
            weekdays: vec![Weekday::Fri, Weekday::Mon, Weekday::Mon],
            start: t("12:00"),
            end: t("14:00"),
        };
        let p = ok.check().unwrap();
        assert_eq!(
            (p.name.as_str(), p.weekdays),
            ("Nap", vec![Weekday::Mon, Weekday::Fri])
        );
        assert!(NewPrivacyPeriod {
            weekdays: vec![],
            ..ok.clone()
        }
        .check()
        .is_err());
        assert!(NewPrivacyPeriod {
            end: t("12:00"),
            ..ok.clone()
        }
        .check()
        .is_err());
        assert!(NewPrivacyPeriod {
            end: t("00:00"),
            ..ok.clone()
        }
        .check()
        .is_err());
    }

    #[test]
    fn unknown_time_zones_are_refused_with_the_name() {
        let e = CentreTimeZone::parse("Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn a_private_area_refuses_a_viewable_camera() {
        let area = Area {
            id: AreaId(1),
            centre_id: CentreId(1),
            name: "换尿布间".into(),
            private: true,
            updated_at_us: 0,
            updated_by: "t".into(),
        };
        let cam = CameraId::parse("nappy").unwrap();
        assert!(check_viewable_in(&cam, Some(&area), false).is_ok());
        assert!(matches!(
            check_viewable_in(&cam, Some(&area), true),
            Err(CentreError::Conflict(_))
        ));
        assert!(check_viewable_in(
            &cam,
            Some(&Area {
                private: false,
                ..area
            }),
            true
        )
        .is_ok());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("name", "  Sunflowers ").unwrap(), "Sunflowers");
        assert!(check_name("name", "   ").is_err());
        assert!(check_name("name", &"x".repeat(101)).is_err());
        assert!(check_name("name", "a\nb").is_err());
    }

    #[test]
    fn birth_dates_are_calendar_dates() {
        assert_eq!(
            BirthDate::parse("2025-02-28").unwrap().to_string(),
            "2025-02-28"
        );
        assert!(BirthDate::parse("2025-02-30").is_err());
        assert!(BirthDate::parse("2025-2-3").is_err());
    }
}
