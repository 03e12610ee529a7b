//! The centre's model against real databases (SQLite and PostgreSQL): class caps, the
//! 150-places limit under concurrency, private areas, consent history, and which
//! cameras a guardian may watch.

mod support;

use cradle::centre::*;
use cradle::config::CameraId;
use cradle::db::Db;
use support::*;

/// Runs a scenario once per database back end: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both_databases!(
    each_classroom_kind_caps_its_capacity,
    a_full_classroom_refuses_the_next_child_with_a_clear_message,
    a_centre_never_has_more_than_150_places,
    twenty_concurrent_enrolments_into_fifteen_places_enrol_exactly_fifteen,
    concurrent_classroom_openings_cannot_exceed_150_places,
    a_camera_in_a_private_area_can_never_be_parent_viewable,
    marking_an_area_private_switches_its_cameras_off,
    decommissioning_is_recorded_final_and_keeps_the_row,
    consent_is_an_append_only_history_whose_latest_row_is_current,
    a_guardian_sees_only_consented_viewable_cameras_of_their_childrens_classrooms,
    moving_a_child_moves_the_guardians_view_with_them,
    a_classroom_closes_only_when_empty_and_frees_its_places,
    centre_settings_are_validated_and_kept,
    seeding_the_demo_centre_twice_changes_nothing,
);

/// A fresh database of `backend` with the migrations applied.
async fn open(backend: Backend) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let db = Db::connect(&url).await.expect("connect and migrate");
    (dir, db)
}

fn stamp() -> Stamp<'static> {
    Stamp {
        by: "director",
        at_us: cradle::time::now_us(),
    }
}

fn cam(id: &str) -> CameraId {
    CameraId::parse(id).unwrap()
}

async fn room(db: &Db, name: &str, kind: ClassroomKind) -> Classroom {
    let centre = db.centre().await.unwrap().id;
    db.create_classroom(
        centre,
        &NewClassroom {
            name: name.into(),
            kind,
            capacity: None,
        },
        stamp(),
    )
    .await
    .unwrap()
}

async fn enrol(db: &Db, name: &str, room: ClassroomId) -> std::result::Result<Child, CentreError> {
    let centre = db.centre().await.unwrap().id;
    db.enrol_child(
        centre,
        &NewChild {
            name: name.into(),
            classroom_id: room,
            birth_date: None,
        },
        stamp(),
    )
    .await
}

async fn place(
    db: &Db,
    camera: &str,
    placement: Placement,
    viewable: bool,
) -> std::result::Result<CameraPlacement, CentreError> {
    let centre = db.centre().await.unwrap().id;
    let u = CameraUpdate {
        placement: Some(placement),
        parent_viewable: Some(viewable),
    };
    db.update_camera(centre, &cam(camera), u, stamp()).await
}

fn in_room(r: &Classroom) -> Placement {
    Placement::Classroom { classroom_id: r.id }
}

/// A guardian account linked to `child`.
async fn guardian(db: &Db, username: &str, child: ChildId) -> Guardian {
    let centre = db.centre().await.unwrap().id;
    let g = db
        .create_guardian(
            centre,
            &NewGuardian {
                username: username.into(),
                display_name: username.into(),
            },
            stamp(),
        )
        .await
        .unwrap();
    db.link_guardian(g.id, child, "mother", stamp())
        .await
        .unwrap();
    g
}

async fn viewable(db: &Db, username: &str) -> Vec<String> {
    db.cameras_viewable_by_guardian(username)
        .await
        .unwrap()
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect()
}

fn conflict(r: std::result::Result<impl std::fmt::Debug, CentreError>) -> String {
    match r {
        Err(CentreError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn invalid(r: std::result::Result<impl std::fmt::Debug, CentreError>) -> String {
    match r {
        Err(CentreError::Invalid(m)) => m,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

async fn each_classroom_kind_caps_its_capacity(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    let s = stamp();
    for (kind, max) in [
        (ClassroomKind::Infant, 10),
        (ClassroomKind::Toddler, 15),
        (ClassroomKind::Preschool, 20),
    ] {
        let r = room(&db, kind.as_str(), kind).await;
        assert_eq!(
            (r.capacity, r.kind_zh),
            (max, kind.label_zh()),
            "default capacity of {kind}"
        );
        let over = NewClassroom {
            name: format!("{kind} too big"),
            kind,
            capacity: Some(max + 1),
        };
        let m = invalid(db.create_classroom(centre, &over, s).await);
        assert!(m.contains(&format!("must be 1 to {max}")), "{m}");
        let lower = NewClassroom {
            name: format!("{kind} small"),
            kind,
            capacity: Some(max - 3),
        };
        assert_eq!(
            db.create_classroom(centre, &lower, s)
                .await
                .unwrap()
                .capacity,
            max - 3
        );
    }
    // Changing the kind re-checks the capacity against the new kind.
    let r = room(&db, "Rainbow", ClassroomKind::Preschool).await;
    let u = ClassroomUpdate {
        name: "Rainbow".into(),
        kind: ClassroomKind::Infant,
        capacity: Some(20),
    };
    invalid(db.update_classroom(r.id, &u, s).await);
    let u = ClassroomUpdate {
        name: "Rainbow".into(),
        kind: ClassroomKind::Infant,
        capacity: None,
    };
    assert_eq!(db.update_classroom(r.id, &u, s).await.unwrap().capacity, 10);
    // A duplicate name is a conflict, not a database error.
    let dup = NewClassroom {
        name: "Rainbow".into(),
        kind: ClassroomKind::Toddler,
        capacity: None,
    };
    assert!(conflict(db.create_classroom(centre, &dup, s).await).contains("already exists"));
}

async fn a_full_classroom_refuses_the_next_child_with_a_clear_message(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let r = room(&db, "Sunflowers", ClassroomKind::Toddler).await;
    for i in 0..15 {
        enrol(&db, &format!("child {i}"), r.id).await.unwrap();
    }
    let m = conflict(enrol(&db, "one too many", r.id).await);
    assert_eq!(
        m,
        "classroom \"Sunflowers\" (托小班) is full: 15 of 15 children enrolled"
    );
    // Capacity cannot drop below the children enrolled.
    let u = ClassroomUpdate {
        name: "Sunflowers".into(),
        kind: ClassroomKind::Toddler,
        capacity: Some(12),
    };
    let m = conflict(db.update_classroom(r.id, &u, stamp()).await);
    assert!(m.contains("has 15 children enrolled"), "{m}");
    assert_eq!(db.classroom(r.id).await.unwrap().enrolled, 15);
    // Unknown classroom: not found.
    assert!(matches!(
        enrol(&db, "x", ClassroomId(9999)).await,
        Err(CentreError::NotFound(_))
    ));
}

async fn a_centre_never_has_more_than_150_places(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap();
    for i in 0..7 {
        room(&db, &format!("Preschool {i}"), ClassroomKind::Preschool).await; // 140 places
    }
    let ten = room(&db, "Infants", ClassroomKind::Infant).await; // 150
    let one_more = NewClassroom {
        name: "Extra".into(),
        kind: ClassroomKind::Infant,
        capacity: Some(10),
    };
    let m = conflict(db.create_classroom(centre.id, &one_more, stamp()).await);
    assert_eq!(
        m,
        format!(
            "centre {:?} would have 160 places; the limit is 150",
            centre.name
        )
    );
    // Raising a capacity is held to the same limit; lowering one makes room.
    let u = ClassroomUpdate {
        name: "Infants".into(),
        kind: ClassroomKind::Toddler,
        capacity: Some(15),
    };
    assert!(
        conflict(db.update_classroom(ten.id, &u, stamp()).await).contains("would have 155 places")
    );
    let u = ClassroomUpdate {
        name: "Infants".into(),
        kind: ClassroomKind::Infant,
        capacity: Some(5),
    };
    db.update_classroom(ten.id, &u, stamp()).await.unwrap();
    let five = NewClassroom {
        name: "Extra".into(),
        kind: ClassroomKind::Infant,
        capacity: Some(5),
    };
    db.create_classroom(centre.id, &five, stamp())
        .await
        .unwrap();
    let places = db.centre_places(centre.id).await.unwrap();
    assert_eq!((places.capacity, places.limit), (150, 150));
}

async fn twenty_concurrent_enrolments_into_fifteen_places_enrol_exactly_fifteen(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let r = room(&db, "Sunflowers", ClassroomKind::Toddler).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move { enrol(&db, &format!("child {i}"), r.id).await })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CentreError::Conflict(m)) => {
                assert!(m.contains("is full: 15 of 15"), "{m}");
                full += 1;
            }
            Err(e) => panic!("enrolment failed other than by a full class: {e:?}"),
        }
    }
    assert_eq!((ok, full), (15, 5));
    let centre = db.centre().await.unwrap().id;
    assert_eq!(
        db.list_children(centre, Some(r.id)).await.unwrap().len(),
        15
    );
    assert_eq!(db.classroom(r.id).await.unwrap().enrolled, 15);
}

async fn concurrent_classroom_openings_cannot_exceed_150_places(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    // Ten rooms of 20 places asked for at once: only seven (140 places) fit.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let new = NewClassroom {
                    name: format!("Room {i}"),
                    kind: ClassroomKind::Preschool,
                    capacity: None,
                };
                db.create_classroom(centre, &new, stamp()).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CentreError::Conflict(m)) => assert!(m.contains("the limit is 150"), "{m}"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 7);
    assert_eq!(db.centre_places(centre).await.unwrap().capacity, 140);
}

async fn a_camera_in_a_private_area_can_never_be_parent_viewable(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    let s = stamp();
    let nappy = db
        .create_area(
            centre,
            &NewArea {
                name: "换尿布间".into(),
                private: true,
            },
            s,
        )
        .await
        .unwrap();
    let r = room(&db, "Little Stars", ClassroomKind::Infant).await;
    let in_nappy = Placement::Area { area_id: nappy.id };

    // Placing it there viewable is refused, and nothing is written.
    let m = conflict(place(&db, "nappy", in_nappy, true).await);
    assert_eq!(
        m,
        "camera \"nappy\" is in private area \"换尿布间\": it can never be viewable by parents"
    );
    assert_eq!(
        db.camera_placement(&cam("nappy")).await.unwrap(),
        CameraPlacement::unplaced(cam("nappy"))
    );
    // Placed not viewable, it cannot be made viewable afterwards.
    place(&db, "nappy", in_nappy, false).await.unwrap();
    let u = CameraUpdate {
        placement: None,
        parent_viewable: Some(true),
    };
    conflict(db.update_camera(centre, &cam("nappy"), u, s).await);
    // A viewable classroom camera cannot be moved into the private area as it is…
    place(&db, "room", in_room(&r), true).await.unwrap();
    let u = CameraUpdate {
        placement: Some(in_nappy),
        parent_viewable: None,
    };
    conflict(db.update_camera(centre, &cam("room"), u, s).await);
    // …only switched off in the same change.
    let u = CameraUpdate {
        placement: Some(in_nappy),
        parent_viewable: Some(false),
    };
    let p = db.update_camera(centre, &cam("room"), u, s).await.unwrap();
    assert_eq!((p.placement, p.parent_viewable), (in_nappy, false));
    // An unknown classroom or area is not found.
    let missing = place(
        &db,
        "room",
        Placement::Area {
            area_id: AreaId(999),
        },
        false,
    )
    .await;
    assert!(
        matches!(missing, Err(CentreError::NotFound(_))),
        "{missing:?}"
    );
}

async fn marking_an_area_private_switches_its_cameras_off(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    let s = stamp();
    let hall = db
        .create_area(
            centre,
            &NewArea {
                name: "Hall".into(),
                private: false,
            },
            s,
        )
        .await
        .unwrap();
    let at_hall = Placement::Area { area_id: hall.id };
    place(&db, "hall-1", at_hall, true).await.unwrap();
    place(&db, "hall-2", at_hall, false).await.unwrap();
    let (area, switched_off) = db
        .update_area(
            hall.id,
            &NewArea {
                name: "Toilets".into(),
                private: true,
            },
            s,
        )
        .await
        .unwrap();
    assert!(area.private);
    assert_eq!(area.name, "Toilets");
    assert_eq!(switched_off, vec![cam("hall-1")]);
    assert!(
        !db.camera_placement(&cam("hall-1"))
            .await
            .unwrap()
            .parent_viewable
    );
    let u = CameraUpdate {
        placement: None,
        parent_viewable: Some(true),
    };
    conflict(db.update_camera(centre, &cam("hall-1"), u, s).await);
}

async fn decommissioning_is_recorded_final_and_keeps_the_row(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    let r = room(&db, "Sunflowers", ClassroomKind::Toddler).await;
    place(&db, "toddler-room", in_room(&r), true).await.unwrap();
    invalid(
        db.decommission_camera(centre, &cam("toddler-room"), "  ", stamp())
            .await,
    );
    let s = Stamp {
        by: "director",
        at_us: 1_700_000_000_000_000,
    };
    let p = db
        .decommission_camera(
            centre,
            &cam("toddler-room"),
            "lens broken, replaced by toddler-room-2",
            s,
        )
        .await
        .unwrap();
    let d = p.decommissioned.clone().expect("decommission recorded");
    assert_eq!(
        (d.at_us, d.by.as_str(), d.reason.as_str()),
        (
            s.at_us,
            "director",
            "lens broken, replaced by toddler-room-2"
        )
    );
    assert!(
        !p.parent_viewable,
        "a decommissioned camera is not viewable"
    );
    assert_eq!(
        p.placement,
        in_room(&r),
        "the placement stays for the history"
    );
    // Final: no second decommission, no further changes.
    conflict(
        db.decommission_camera(centre, &cam("toddler-room"), "again", stamp())
            .await,
    );
    conflict(place(&db, "toddler-room", in_room(&r), true).await);
    assert_eq!(db.camera_placements(centre).await.unwrap(), vec![p]);
}

async fn consent_is_an_append_only_history_whose_latest_row_is_current(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let r = room(&db, "Little Stars", ClassroomKind::Infant).await;
    let child = enrol(&db, "王小宝", r.id).await.unwrap();
    let g = guardian(&db, "mum", child.id).await;
    assert_eq!(
        db.current_consent(g.id, child.id).await.unwrap(),
        None,
        "linking is not consent"
    );

    let steps = [
        (ConsentState::Given, "mum", 1_000, "signed the form"),
        (ConsentState::Withdrawn, "mum", 2_000, "changed her mind"),
        (
            ConsentState::Given,
            "director",
            3_000,
            "paper form received",
        ),
    ];
    for (state, by, at_us, note) in steps {
        db.set_consent(g.id, child.id, state, note, Stamp { by, at_us })
            .await
            .unwrap();
    }
    let history = db.consent_history(g.id, child.id).await.unwrap();
    let seen: Vec<_> = history
        .iter()
        .map(|c| (c.state, c.by.as_str(), c.at_us, c.note.as_str()))
        .collect();
    assert_eq!(seen, steps.to_vec());
    assert_eq!(
        db.current_consent(g.id, child.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ConsentState::Given
    );

    // Unlinking appends a withdrawal; consent cannot be given again until relinked.
    db.unlink_guardian(g.id, child.id, stamp()).await.unwrap();
    let history = db.consent_history(g.id, child.id).await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[3].state, ConsentState::Withdrawn);
    conflict(
        db.set_consent(g.id, child.id, ConsentState::Given, "", stamp())
            .await,
    );
    let link = db
        .link_guardian(g.id, child.id, "mother", stamp())
        .await
        .unwrap();
    assert_eq!(
        link.consent.map(|c| c.state),
        Some(ConsentState::Withdrawn),
        "relinking does not restore consent"
    );
    // Consent for a guardian who is not linked to the child is refused as not found.
    let other = enrol(&db, "李朵朵", r.id).await.unwrap();
    let e = db
        .set_consent(g.id, other.id, ConsentState::Given, "", stamp())
        .await;
    assert!(matches!(e, Err(CentreError::NotFound(_))), "{e:?}");
}

async fn a_guardian_sees_only_consented_viewable_cameras_of_their_childrens_classrooms(
    backend: Backend,
) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    let stars = room(&db, "Little Stars", ClassroomKind::Infant).await;
    let flowers = room(&db, "Sunflowers", ClassroomKind::Toddler).await;
    let hall = db
        .create_area(
            centre,
            &NewArea {
                name: "Playground".into(),
                private: false,
            },
            stamp(),
        )
        .await
        .unwrap();
    place(&db, "stars-1", in_room(&stars), true).await.unwrap();
    place(&db, "stars-2", in_room(&stars), true).await.unwrap();
    place(&db, "stars-door", in_room(&stars), false)
        .await
        .unwrap();
    place(&db, "flowers-1", in_room(&flowers), true)
        .await
        .unwrap();
    place(
        &db,
        "playground",
        Placement::Area { area_id: hall.id },
        true,
    )
    .await
    .unwrap();

    let child = enrol(&db, "王小宝", stars.id).await.unwrap();
    let g = guardian(&db, "mum", child.id).await;
    let other = enrol(&db, "陈乐乐", flowers.id).await.unwrap();
    guardian(&db, "dad", other.id).await;

    assert!(viewable(&db, "mum").await.is_empty(), "no consent yet");
    db.set_consent(g.id, child.id, ConsentState::Given, "", stamp())
        .await
        .unwrap();
    assert_eq!(viewable(&db, "mum").await, ["stars-1", "stars-2"]);
    let detailed = db.viewable_cameras_of_guardian("mum").await.unwrap();
    assert!(detailed
        .iter()
        .all(|c| c.classroom_id == stars.id && c.classroom_name == "Little Stars"));
    assert!(
        viewable(&db, "dad").await.is_empty(),
        "another guardian's consent grants nothing"
    );
    assert!(viewable(&db, "stranger").await.is_empty());

    db.set_consent(g.id, child.id, ConsentState::Withdrawn, "", stamp())
        .await
        .unwrap();
    assert!(
        viewable(&db, "mum").await.is_empty(),
        "none after withdrawal"
    );
    db.set_consent(g.id, child.id, ConsentState::Given, "", stamp())
        .await
        .unwrap();
    db.decommission_camera(centre, &cam("stars-2"), "replaced", stamp())
        .await
        .unwrap();
    assert_eq!(
        viewable(&db, "mum").await,
        ["stars-1"],
        "none for a decommissioned camera"
    );
    let u = CameraUpdate {
        placement: None,
        parent_viewable: Some(false),
    };
    db.update_camera(centre, &cam("stars-1"), u, stamp())
        .await
        .unwrap();
    assert!(
        viewable(&db, "mum").await.is_empty(),
        "none once not parent-viewable"
    );

    let kids = db.guardian_children("mum").await.unwrap();
    assert_eq!(kids.len(), 1);
    assert_eq!(
        (kids[0].child.id, kids[0].classroom_name.as_str()),
        (child.id, "Little Stars")
    );
    assert_eq!(
        kids[0].consent.as_ref().map(|c| c.state),
        Some(ConsentState::Given)
    );
}

async fn moving_a_child_moves_the_guardians_view_with_them(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let stars = room(&db, "Little Stars", ClassroomKind::Infant).await;
    let flowers = room(&db, "Sunflowers", ClassroomKind::Toddler).await;
    place(&db, "infant-room", in_room(&stars), true)
        .await
        .unwrap();
    place(&db, "toddler-room", in_room(&flowers), true)
        .await
        .unwrap();
    let child = enrol(&db, "王小宝", stars.id).await.unwrap();
    let g = guardian(&db, "mum", child.id).await;
    db.set_consent(g.id, child.id, ConsentState::Given, "", stamp())
        .await
        .unwrap();
    assert_eq!(viewable(&db, "mum").await, ["infant-room"]);

    let moved = db.move_child(child.id, flowers.id, stamp()).await.unwrap();
    assert_eq!(moved.classroom_id, flowers.id);
    assert_eq!(viewable(&db, "mum").await, ["toddler-room"]);
    let moves: Vec<_> = db
        .child_moves(child.id)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.from, m.to))
        .collect();
    assert_eq!(
        moves,
        [(None, Some(stars.id)), (Some(stars.id), Some(flowers.id))]
    );

    // A move into a full classroom is refused; leaving ends the view.
    let full = room(&db, "Tiny", ClassroomKind::Infant).await;
    for i in 0..10 {
        enrol(&db, &format!("c{i}"), full.id).await.unwrap();
    }
    assert!(conflict(db.move_child(child.id, full.id, stamp()).await).contains("is full: 10 of 10"));
    db.child_left(child.id, stamp()).await.unwrap();
    assert!(viewable(&db, "mum").await.is_empty());
    assert_eq!(db.classroom(flowers.id).await.unwrap().enrolled, 0);
    conflict(db.move_child(child.id, stars.id, stamp()).await);
}

async fn a_classroom_closes_only_when_empty_and_frees_its_places(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let centre = db.centre().await.unwrap().id;
    let r = room(&db, "Rainbow", ClassroomKind::Preschool).await;
    let child = enrol(&db, "孙悦悦", r.id).await.unwrap();
    place(&db, "preschool-room", in_room(&r), true)
        .await
        .unwrap();
    assert!(
        conflict(db.close_classroom(r.id, stamp()).await).contains("still has 1 children enrolled")
    );
    db.child_left(child.id, stamp()).await.unwrap();
    assert!(conflict(db.close_classroom(r.id, stamp()).await).contains("preschool-room"));
    db.decommission_camera(centre, &cam("preschool-room"), "room closing", stamp())
        .await
        .unwrap();
    let closed = db.close_classroom(r.id, stamp()).await.unwrap();
    assert!(closed.closed_at_us.is_some());
    assert!(db.list_classrooms(centre).await.unwrap().is_empty());
    assert_eq!(db.centre_places(centre).await.unwrap().capacity, 0);
    conflict(enrol(&db, "late", r.id).await);
    // The name can be used again by a new room.
    room(&db, "Rainbow", ClassroomKind::Preschool).await;
}

async fn centre_settings_are_validated_and_kept(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let c = db.centre().await.unwrap();
    assert_eq!(c.time_zone.name(), "Asia/Shanghai");
    assert_eq!(c.viewing_hours, ViewingHours::default_weekdays());
    let hours = ViewingHours::on(
        &Weekday::WORKDAYS,
        LocalTime::parse("08:00").unwrap(),
        LocalTime::parse("17:30").unwrap(),
    )
    .unwrap();
    let bad = CentreUpdate {
        name: "Sunshine".into(),
        time_zone: "Asia/Nowhere".into(),
        viewing_hours: hours.clone(),
    };
    invalid(db.update_centre(c.id, &bad, stamp()).await);
    let u = CentreUpdate {
        name: " 阳光托育 Sunshine ".into(),
        time_zone: "Asia/Urumqi".into(),
        viewing_hours: hours.clone(),
    };
    let c = db.update_centre(c.id, &u, stamp()).await.unwrap();
    assert_eq!(
        (c.name.as_str(), c.time_zone.name(), &c.viewing_hours),
        ("阳光托育 Sunshine", "Asia/Urumqi", &hours)
    );
    assert_eq!(db.centre().await.unwrap(), c);

    // Privacy periods are stored per classroom and feed viewing_status.
    let r = room(&db, "Sunflowers", ClassroomKind::Toddler).await;
    let nap = NewPrivacyPeriod {
        name: "午睡".into(),
        weekdays: vec![Weekday::Mon],
        start: LocalTime::parse("22:00").unwrap(),
        end: LocalTime::parse("06:00").unwrap(),
    };
    let p = db.add_privacy_period(r.id, &nap, stamp()).await.unwrap();
    assert_eq!(db.privacy_periods(r.id).await.unwrap(), vec![p.clone()]);
    db.delete_privacy_period(p.id).await.unwrap();
    assert!(db.privacy_periods(r.id).await.unwrap().is_empty());
}

async fn seeding_the_demo_centre_twice_changes_nothing(backend: Backend) {
    let (_dir, db) = open(backend).await;
    let first = db.seed_demo_centre(cradle::time::now_us()).await.unwrap();
    let snapshot = |db: Db| async move {
        let id = db.centre().await.unwrap().id;
        let rooms = db.list_classrooms(id).await.unwrap();
        let areas = db.list_areas(id).await.unwrap();
        let cams = db.camera_placements(id).await.unwrap();
        let kids = db.list_children(id, None).await.unwrap();
        let guardians = db.list_guardians(id).await.unwrap();
        let infant = viewable(&db, "parent-infant").await;
        let toddler = viewable(&db, "parent-toddler").await;
        (rooms, areas, cams, kids, guardians, infant, toddler)
    };
    let before = snapshot(db.clone()).await;
    let second = db.seed_demo_centre(cradle::time::now_us()).await.unwrap();
    assert_eq!(first, second);
    let after = snapshot(db.clone()).await;
    assert_eq!(before, after);

    let (rooms, areas, cams, kids, guardians, infant, toddler) = after;
    let kinds: Vec<_> = rooms.iter().map(|r| r.kind).collect();
    for k in ClassroomKind::ALL {
        assert!(kinds.contains(&k), "a classroom of kind {k}");
    }
    assert!(
        areas.iter().any(|a| a.private),
        "a private nappy-changing area"
    );
    assert_eq!(cams.len(), 5);
    for never_viewable in ["entrance", "nappy-room"] {
        assert!(
            !cams
                .iter()
                .find(|c| c.camera_id.as_str() == never_viewable)
                .unwrap()
                .parent_viewable,
            "{never_viewable}"
        );
    }
    assert_eq!(kids.len(), 6);
    assert_eq!(guardians.len(), 2);
    assert_eq!(infant, ["infant-room"]);
    assert_eq!(toddler, ["toddler-room"]);
    assert!(second.name.contains("demo"));
}
