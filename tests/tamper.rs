//! Tamper checks against crafted cameras: a room that stays a room, and rooms whose
//! lens is covered, whose picture freezes, blurs, or moves aside after 20 s
//! (`scripts/make-tamper-clips.sh`, made with Debian's ffmpeg into a temp dir when the
//! tests start, checked by the script with ffprobe and signalstats).
//!
//! Two levels: the clips' keyframes fed straight through Cradle's own keyframe
//! decoder and tamper detector (one check per keyframe, as the snapshot task makes
//! them), which says what the pictures measure; and the whole path, where
//! `cradle camsim --clip` plays the clips to a real server that records them, takes a
//! snapshot every second and raises `lens_covered`, `picture_frozen`,
//! `picture_blurred` or `camera_moved` with the picture it saw. The alarm path is the
//! same on both databases, so the end-to-end test runs on SQLite.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cradle::hub::{Frame, StreamParams};
use cradle::snapshot::decode::KeyframeDecoder;
use cradle::snapshot::tamper::{Change, Detector, Kind, Thresholds};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::*;

/// The clips, and the alarm each must raise (None: none at all).
const CLIPS: [(&str, Option<Kind>); 5] = [
    ("normal", None),
    ("black", Some(Kind::Covered)),
    ("frozen", Some(Kind::Frozen)),
    ("blurred", Some(Kind::Blurred)),
    ("shifted", Some(Kind::Moved)),
];
/// Seconds of room before the fault, and the clips' length (make-tamper-clips.sh).
const FAULT_AT_S: u64 = 20;
const CLIP_S: u64 = 60;

/// The alarm kind the server raises for a detector kind (src/alarms.rs).
fn alarm_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Covered => "lens_covered",
        Kind::Frozen => "picture_frozen",
        Kind::Blurred => "picture_blurred",
        Kind::Moved => "camera_moved",
    }
}
const TAMPER_KINDS: [&str; 4] = ["lens_covered", "picture_frozen", "picture_blurred", "camera_moved"];

/// Makes the clips once per test binary (about a minute on two cores), under the test
/// run's temp dir, which scripts/test.sh removes.
fn clips() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = std::env::var_os("CRADLE_TEST_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new().prefix("tamper-clips.").tempdir_in(parent).unwrap().keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-tamper-clips.sh");
        let start = Instant::now();
        let out = Command::new("bash").arg(&script).arg(&dir).output().expect("run make-tamper-clips.sh");
        assert!(
            out.status.success(),
            "make-tamper-clips.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "tamper clips made in {:.0?} into {}:\n{}",
            start.elapsed(),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        dir
    })
}

fn clip_path(name: &str) -> PathBuf {
    clips().join(format!("{name}.h264"))
}

// ---- level 1: the clips' keyframes through the decoder and the detector ------------------

use cradle::camsim::split_annex_b as nal_units;

/// Every keyframe of an H.264 clip as the hub carries it: MP4 form (length-prefixed NAL
/// units, no AUDs or parameter sets), with the sample entry retina builds from the
/// parameter sets, as ingest does.
fn keyframes(path: &Path) -> Vec<Frame> {
    use base64::Engine;
    let data = std::fs::read(path).unwrap();
    let nals = nal_units(&data);
    let sps = *nals.iter().find(|n| n[0] & 0x1f == 7).expect("SPS");
    let pps = *nals.iter().find(|n| n[0] & 0x1f == 8).expect("PPS");
    let b64 = |n: &[u8]| base64::engine::general_purpose::STANDARD.encode(n);
    let fmtp = format!(
        "packetization-mode=1;profile-level-id={:02X}{:02X}{:02X};sprop-parameter-sets={},{}",
        sps[1],
        sps[2],
        sps[3],
        b64(sps),
        b64(pps)
    );
    let depacketizer = retina::codec::Depacketizer::new("video", "h264", 90_000, None, Some(&fmtp)).unwrap();
    let Some(retina::codec::ParametersRef::Video(v)) = depacketizer.parameters() else {
        panic!("retina found no video parameters in {fmtp}");
    };
    let (width, height) = v.pixel_dimensions();
    let params = Arc::new(StreamParams {
        codec: v.rfc6381_codec().to_owned(),
        sample_entry: v.mp4_sample_entry().build().unwrap(),
        width: width as u16,
        height: height as u16,
    });
    // Access units split on AUDs (the clips have one in front of every picture).
    let mut frames = Vec::new();
    let mut au: Option<(bool, Vec<u8>)> = None;
    let mut pictures = 0i64;
    let mut finish = |au: Option<(bool, Vec<u8>)>, frames: &mut Vec<Frame>| {
        if let Some((is_key, data)) = au {
            if is_key {
                frames.push(Frame {
                    ts_90k: pictures * 3600,
                    arrival_us: 0,
                    is_key,
                    data: Bytes::from(data),
                    params: params.clone(),
                });
            }
            pictures += 1;
        }
    };
    for nal in nals {
        match nal[0] & 0x1f {
            9 => finish(au.replace((false, Vec::new())), &mut frames),
            7 | 8 => {}
            t => {
                let (is_key, data) = au.get_or_insert_with(|| (false, Vec::new()));
                *is_key |= t == 5;
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(nal);
            }
        }
    }
    finish(au.take(), &mut frames);
    assert_eq!(pictures, 25 * CLIP_S as i64, "{}: pictures", path.display());
    frames
}

/// Plays a clip's keyframes, looped, through a decoder and a detector for `seconds` (one
/// check per keyframe: one a second), and returns each change with the second it
/// happened at.
fn detect(name: &str, seconds: u64) -> Vec<(u64, Change)> {
    let frames = keyframes(&clip_path(name));
    assert_eq!(frames.len() as u64, CLIP_S, "{name}: one keyframe a second");
    let mut decoder = KeyframeDecoder::new();
    let mut detector = Detector::new(Thresholds::default());
    let mut changes = Vec::new();
    for second in 0..seconds {
        let decoded = decoder.decode(&frames[(second % CLIP_S) as usize]).unwrap();
        for change in detector.check(&decoded.luma, true) {
            changes.push((second, change));
        }
        let m = detector.last().unwrap();
        if second % CLIP_S == FAULT_AT_S - 1 || second % CLIP_S == FAULT_AT_S + 5 {
            eprintln!(
                "{name} at {second:>3} s: mean {:.0} spread {} mad {:.2} sharpness {:.2} (normal {:.2}) similarity {:.2}",
                m.stats.mean,
                m.stats.spread(),
                m.mad.unwrap_or(f32::NAN),
                m.sharpness,
                m.sharpness_baseline.unwrap_or(f32::NAN),
                m.similarity.unwrap_or(f32::NAN)
            );
        }
    }
    changes
}

/// The decoder and the detector see in each clip exactly what it was made to show: the
/// room raises nothing in two loops; each fault raises its own kind, and only it, a few
/// checks after it starts, and clears a few checks after the room comes back, in both
/// loops (the second with the reference and normal sharpness learnt in the first).
#[test]
fn each_crafted_clip_raises_exactly_its_kind_in_the_detector() {
    for (name, expected) in CLIPS {
        let changes = detect(name, 2 * CLIP_S + 5);
        let summary: Vec<String> = changes
            .iter()
            .map(|(s, c)| match c {
                Change::Raised { kind, detail } => format!("{s} s raised {} ({detail})", kind.as_str()),
                Change::Cleared { kind, .. } => format!("{s} s cleared {}", kind.as_str()),
            })
            .collect();
        eprintln!("{name}: {summary:#?}");
        let Some(kind) = expected else {
            assert!(changes.is_empty(), "{name}: the room raised {summary:#?}");
            continue;
        };
        // Two loops: raised and cleared in each.
        let got: Vec<(&str, Kind)> = changes
            .iter()
            .map(|(_, c)| match c {
                Change::Raised { kind, .. } => ("raised", *kind),
                Change::Cleared { kind, .. } => ("cleared", *kind),
            })
            .collect();
        assert_eq!(
            got,
            [("raised", kind), ("cleared", kind), ("raised", kind), ("cleared", kind)],
            "{name}: {summary:#?}"
        );
        let (raised, cleared) = (changes[0].0, changes[1].0);
        // Raised within `consecutive` (frozen: `frozen_pictures` + 1) checks of the fault,
        // cleared within `clear_after` (+1 for the first room picture) of its end.
        assert!((FAULT_AT_S..=FAULT_AT_S + 4).contains(&raised), "{name}: raised at {raised} s");
        assert!((CLIP_S..=CLIP_S + 3).contains(&cleared), "{name}: cleared at {cleared} s");
    }
}

// ---- level 2: the whole path ---------------------------------------------------------------

/// A clip camsim cannot loop stops it at start, with the file and the reason.
#[test]
fn camsim_refuses_an_unusable_clip_naming_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("phone-video.mp4");
    let mut bytes = vec![0, 0, 0, 0x18];
    bytes.extend_from_slice(b"ftypisom");
    bytes.resize(64, 0);
    std::fs::write(&mp4, bytes).unwrap();
    let missing = dir.path().join("nowhere.h264");
    for (arg, says) in [
        (format!("room={}", mp4.display()), "not an Annex B byte stream"),
        (format!("room={}", missing.display()), "cannot read the file"),
        ("cam2=x.h264".to_owned(), "taken by a built-in camera"),
        ("room".to_owned(), "expected NAME=PATH"),
    ] {
        let out = Command::new(BIN)
            .args(["camsim", "--listen", &format!("127.0.0.1:{}", free_port()), "--streams", "1", "--clip", &arg])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{arg}: camsim started");
        assert!(err.contains(says), "{arg}: {err}");
        if arg.contains('/') {
            let file = arg.split_once('=').unwrap().1;
            assert!(err.contains(file), "{arg}: the error does not name the file: {err}");
        }
    }
}

/// Every tamper alarm, newest first.
async fn tamper_alarms(server: &Server) -> Vec<Value> {
    let (status, v) = server.call(Method::GET, "/api/v1/alarms?state=all", Some(&server.token), None).await;
    assert_eq!(status, StatusCode::OK, "GET /api/v1/alarms: {v}");
    v["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| TAMPER_KINDS.contains(&a["kind"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

/// The alarm's picture: a JPEG (SOI marker, and ffprobe decodes it to 1280x720).
/// Answers its size and its mean luma (ffmpeg's signalstats, 0–255).
async fn check_snapshot(server: &Server, alarm: &Value) -> (usize, f64) {
    let url = alarm["snapshot"].as_str().unwrap_or_else(|| panic!("no snapshot URL in {alarm:#}"));
    assert_eq!(url, format!("/api/v1/alarms/{}/snapshot.jpg", alarm["id"]));
    let r = reqwest::Client::new()
        .get(format!("{}{url}", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "image/jpeg", "GET {url}");
    let jpeg = r.bytes().await.unwrap();
    assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff], "{url}: not a JPEG");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alarm.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    assert!(out.status.success(), "ffprobe rejected {url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mjpeg,1280,720", "{url}");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&path)
        .args(["-vf", "signalstats,metadata=print:file=-", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let stats = String::from_utf8_lossy(&out.stdout);
    let yavg = stats
        .lines()
        .find_map(|l| l.strip_prefix("lavfi.signalstats.YAVG="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no YAVG for {url}: {stats}"));
    (jpeg.len(), yavg)
}

/// Five cameras in front of the crafted clips, checked every second. Each faulty one
/// raises its own alarm, and only that one, a few seconds after its fault starts (20 s
/// into the clip), with the picture it was raised on; the alarm clears when the clip
/// loops back to the room. The room itself raises nothing in all that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_cameras_raise_their_alarm_with_a_snapshot_and_the_room_raises_none() {
    let clip_args: Vec<(String, PathBuf)> = CLIPS.iter().map(|(n, _)| (n.to_string(), clip_path(n))).collect();
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let clip_refs: Vec<(&str, &Path)> = clip_args.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
    let _cams = camsim_with_clips(cam_port, &clip_refs).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.extra_toml = "[snapshots]\ninterval_seconds = 1\n".into();
    for (name, _) in CLIPS {
        spec.cameras.push(CameraSpec::new(name, &format!("rtsp://127.0.0.1:{cam_port}/{name}")));
    }
    // camsim starts each clip when its camera sends PLAY, a moment after the server
    // starts: each fault begins a little over FAULT_AT_S after `start`.
    let start = Instant::now();
    let server = spec.start().await;
    for (name, _) in CLIPS {
        server.wait_recording(name, Duration::from_secs(20)).await;
    }
    let connected = start.elapsed();
    eprintln!("all cameras recording {connected:.1?} after the server was started");

    let mut raised_after: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut cleared_after: BTreeMap<&str, Duration> = BTreeMap::new();
    let deadline = Duration::from_secs(90);
    loop {
        let alarms = tamper_alarms(&server).await;
        let t = start.elapsed();
        for a in &alarms {
            let camera = a["camera_id"].as_str().unwrap_or("");
            let kind = a["kind"].as_str().unwrap();
            let expected = CLIPS.iter().find(|(n, _)| *n == camera).and_then(|(_, k)| *k).map(alarm_kind);
            assert_eq!(
                Some(kind),
                expected,
                "camera {camera} raised {kind} at {t:.1?}: {a:#}\nall: {alarms:#?}\nlog tail:\n{}",
                log_tail(&server, 40)
            );
            let camera = CLIPS.iter().find(|(n, _)| *n == camera).unwrap().0;
            if !raised_after.contains_key(camera) {
                let (bytes, yavg) = check_snapshot(&server, a).await;
                eprintln!(
                    "{camera}: {kind} raised {t:.1?} after the server was started ({bytes} B JPEG, mean luma {yavg:.0}): {}",
                    a["detail"]
                );
                // The picture shows the fault: black for the covered lens, the room otherwise.
                if kind == "lens_covered" {
                    assert!(yavg < 30.0, "{camera}: the alarm's picture is not black: mean luma {yavg}");
                } else {
                    assert!(yavg > 60.0, "{camera}: the alarm's picture is dark: mean luma {yavg}");
                }
                raised_after.insert(camera, t);
            }
            if a["state"] == "cleared" && !cleared_after.contains_key(camera) {
                eprintln!("{camera}: {kind} cleared {t:.1?} after the server was started: {}", a["clear_detail"]);
                cleared_after.insert(camera, t);
            }
            assert_eq!(
                alarms.iter().filter(|b| b["camera_id"] == a["camera_id"]).count(),
                1,
                "{camera}: more than one alarm in one loop: {alarms:#?}"
            );
        }
        if cleared_after.len() == 4 {
            break;
        }
        assert!(
            t < deadline,
            "after {t:.0?}: raised {raised_after:?}, cleared {cleared_after:?}; alarms {alarms:#?}\nlog tail:\n{}",
            log_tail(&server, 60)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (camera, t) in &raised_after {
        // The fault starts FAULT_AT_S into the clip; a few checks later it is raised.
        assert!(
            *t > Duration::from_secs(FAULT_AT_S) && *t < connected + Duration::from_secs(FAULT_AT_S + 10),
            "{camera}: raised {t:.1?} after the server was started"
        );
    }
    for (camera, t) in &cleared_after {
        assert!(*t > Duration::from_secs(CLIP_S), "{camera}: cleared {t:.1?} after start, before the room came back");
    }
    eprintln!(
        "after the server was started (each fault from ~{FAULT_AT_S} s to ~{CLIP_S} s): raised {raised_after:.1?}; cleared {cleared_after:.1?}"
    );
}

fn log_tail(server: &Server, lines: usize) -> String {
    let log = server.log();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
