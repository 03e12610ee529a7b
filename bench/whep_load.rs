//! WHEP load client for `bench/live.sh`: N receive-only viewers of one camera.
//!
//! Each viewer is a webrtc-rs 0.21 peer connection (the stack the server itself uses,
//! standing in for a browser that does not decode): a `recvonly` H.264 transceiver, the
//! default interceptors (NACK, RTCP reports) as a browser has, one UDP socket on
//! 127.0.0.1, and a non-trickle WHEP `POST /api/v1/cameras/{id}/whep`. Viewers are
//! started at `--rate` per second; after `--settle` seconds (every GOP burst delivered,
//! every connection up) a steady window of `--window` seconds measures:
//!
//! - each viewer's received RTP payload bitrate and frame rate (marker bits), against
//!   the camera's own bitrate over the same window (`cradle_camera_bytes_total` on
//!   `/metrics`): a viewer is *ok* when it receives at least `--ok-fraction` of it;
//! - the server's send-delay histogram, as the difference of its buckets between the
//!   window's two ends (so it describes this load level only);
//! - the CPU time (`utime + stime` of `/proc/PID/stat`) and RSS of the server
//!   (`--server-pid`) and of this client, separately, and the machine's busy time
//!   (`/proc/stat`), so that other work on a shared machine shows.
//!
//! One JSON object goes to standard output (bench/live.sh tabulates it), a summary to
//! standard error. Every session is ended with `DELETE` on its `Location` at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio::sync::Notify;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

#[derive(Parser)]
#[command(about = "Opens N receive-only WHEP viewers of one camera and measures what each receives")]
struct Args {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    base: String,
    /// An operator or admin (staff have no per-family cap).
    #[arg(long)]
    username: String,
    #[arg(long, env = "WHEP_LOAD_PASSWORD")]
    password: String,
    #[arg(long)]
    camera: String,
    /// Viewers to open (0: measure the idle server only).
    #[arg(long)]
    viewers: usize,
    /// Viewers started per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds between the last start and the window.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 20.0)]
    window: f64,
    /// The server's process id, for its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The camera's process id (same machine), reported alongside.
    #[arg(long)]
    camera_pid: Option<u32>,
    /// A viewer is ok when it receives at least this fraction of the camera's bitrate.
    #[arg(long, default_value_t = 0.9)]
    ok_fraction: f64,
}

/// What one viewer has received so far (written by its track reader).
#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    payload_bytes: AtomicU64,
    frames: AtomicU64,
    /// Microseconds from the run's start to the first RTP packet (0: none yet).
    first_packet_us: AtomicU64,
    failed: AtomicBool,
}

struct Handler {
    counters: Arc<Counters>,
    gathered: Arc<Notify>,
    run_start: Instant,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
            self.counters.failed.store(true, Ordering::Relaxed);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // The callback runs on the connection's driver: read the track on a task of its own.
        let c = self.counters.clone();
        let run_start = self.run_start;
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        if c.packets.fetch_add(1, Ordering::Relaxed) == 0 {
                            c.first_packet_us.store(run_start.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
                        }
                        c.payload_bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        if p.header.marker {
                            c.frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

struct Viewer {
    counters: Arc<Counters>,
    pc: Option<Arc<dyn PeerConnection>>,
    location: Option<String>,
    /// Microseconds from the run's start to the POST.
    posted_us: u64,
    error: Option<String>,
}

/// H.264 as Chromium offers it (the server answers with the first profile it also has).
fn media_engine() -> anyhow::Result<MediaEngine> {
    let mut m = MediaEngine::default();
    let fb = [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .iter()
        .map(|(t, p)| RTCPFeedback { typ: (*t).into(), parameter: (*p).into() })
        .collect::<Vec<_>>();
    for (i, plid) in ["42001f", "42e01f", "4d001f", "64001f"].iter().enumerate() {
        m.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/H264".into(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={plid}"),
                    rtcp_feedback: fb.clone(),
                },
                payload_type: 102 + 2 * i as u8,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(m)
}

async fn open_viewer(http: reqwest::Client, a: Arc<Args>, token: Arc<String>, run_start: Instant) -> Viewer {
    let counters = Arc::new(Counters::default());
    let mut v = Viewer { counters: counters.clone(), pc: None, location: None, posted_us: 0, error: None };
    if let Err(e) = connect(&http, &a, &token, run_start, &mut v).await {
        v.error = Some(format!("{e:#}"));
        v.counters.failed.store(true, Ordering::Relaxed);
    }
    v
}

async fn connect(http: &reqwest::Client, a: &Args, token: &str, run_start: Instant, v: &mut Viewer) -> anyhow::Result<()> {
    let mut media = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let gathered = Arc::new(Notify::new());
    let handler = Arc::new(Handler { counters: v.counters.clone(), gathered: gathered.clone(), run_start });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(SettingEngineBuilder::new().with_include_loopback_candidate(true).build())
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    v.pc = Some(pc.clone());
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
    )
    .await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    // Non-trickle, as most WHEP players: the offer carries the candidates.
    let _ = tokio::time::timeout(Duration::from_secs(2), gathered.notified()).await;
    let sdp = pc.local_description().await.context("no local description")?.sdp;
    v.posted_us = run_start.elapsed().as_micros() as u64;
    let r = http
        .post(format!("{}/api/v1/cameras/{}/whep", a.base, a.camera))
        .bearer_auth(token)
        .header("Content-Type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .context("POST whep")?;
    let status = r.status();
    let location = r.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
    let body = r.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        bail!("WHEP POST answered {status}: {}", body.chars().take(160).collect::<String>());
    }
    v.location = Some(location.context("201 without Location")?);
    pc.set_remote_description(RTCSessionDescription::answer(body)?).await?;
    Ok(())
}

/// (utime + stime in ticks, RSS kB, VmHWM kB) of a process.
fn proc_usage(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((ticks, kb("VmRSS:"), kb("VmHWM:")))
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// A sample (`name{labels}` exactly as exposed) from Prometheus text.
fn sample(metrics: &str, key: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The send-delay histogram's cumulative buckets: (upper bound in seconds, count).
fn delay_buckets(metrics: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for l in metrics.lines() {
        let Some(r) = l.strip_prefix("cradle_live_send_delay_seconds_bucket{le=\"") else { continue };
        let Some((le, rest)) = r.split_once("\"} ") else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
        if let Ok(n) = rest.trim().parse::<f64>() {
            out.push((le, n));
        }
    }
    out
}

struct Snapshot {
    at: Instant,
    viewers: Vec<(u64, u64, u64)>,
    metrics: String,
    server: Option<(u64, u64, u64)>,
    client: Option<(u64, u64, u64)>,
    camera: Option<(u64, u64, u64)>,
    /// Busy ticks of the whole machine (all CPUs).
    machine: Option<u64>,
}

/// Busy ticks of all CPUs since boot: everything but idle and iowait (`/proc/stat`).
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    (f.len() == 8).then(|| f.iter().sum::<u64>() - f[3] - f[4])
}

async fn snapshot(http: &reqwest::Client, a: &Args, viewers: &[Viewer]) -> anyhow::Result<Snapshot> {
    let metrics = http.get(format!("{}/metrics", a.base)).send().await?.error_for_status()?.text().await?;
    Ok(Snapshot {
        at: Instant::now(),
        viewers: viewers
            .iter()
            .map(|v| {
                let c = &v.counters;
                (c.payload_bytes.load(Ordering::Relaxed), c.packets.load(Ordering::Relaxed), c.frames.load(Ordering::Relaxed))
            })
            .collect(),
        server: a.server_pid.and_then(proc_usage),
        client: proc_usage(std::process::id()),
        camera: a.camera_pid.and_then(proc_usage),
        machine: machine_busy(),
        metrics,
    })
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Arc::new(Args::parse());
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/v1/login", a.base))
        .json(&json!({ "username": a.username, "password": a.password }))
        .send()
        .await?
        .error_for_status()
        .context("login")?
        .json()
        .await?;
    let token = Arc::new(login["token"].as_str().context("no token in the login answer")?.to_owned());

    // Ramp: one start every 1/rate seconds; each start runs on its own.
    let run_start = Instant::now();
    let mut starts = Vec::with_capacity(a.viewers);
    for i in 0..a.viewers {
        starts.push(tokio::spawn(open_viewer(http.clone(), a.clone(), token.clone(), run_start)));
        tokio::time::sleep_until((run_start + Duration::from_secs_f64((i + 1) as f64 / a.rate)).into()).await;
    }
    let mut viewers = Vec::with_capacity(a.viewers);
    for s in starts {
        viewers.push(s.await?);
    }
    let ramp_s = run_start.elapsed().as_secs_f64();
    eprintln!("whep_load: {} viewers requested in {ramp_s:.1} s; settling {} s", a.viewers, a.settle);
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;

    let s0 = snapshot(&http, &a, &viewers).await?;
    tokio::time::sleep(Duration::from_secs_f64(a.window)).await;
    let s1 = snapshot(&http, &a, &viewers).await?;
    let dt = (s1.at - s0.at).as_secs_f64();

    let cam_key = format!("cradle_camera_bytes_total{{camera=\"{}\"}}", a.camera);
    let source_bps = match (sample(&s0.metrics, &cam_key), sample(&s1.metrics, &cam_key)) {
        (Some(x), Some(y)) => (y - x) * 8.0 / dt,
        _ => bail!("no {cam_key} on /metrics"),
    };
    let delta = |name: &str| sample(&s1.metrics, name).unwrap_or(0.0) - sample(&s0.metrics, name).unwrap_or(0.0);

    let started = viewers.iter().filter(|v| v.location.is_some()).count();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for v in &viewers {
        if let Some(e) = &v.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    let mut kbps = Vec::new();
    let mut fps = Vec::new();
    let mut receiving = 0;
    let mut ok = 0;
    for (b0, b1) in s0.viewers.iter().zip(&s1.viewers) {
        let bps = (b1.0 - b0.0) as f64 * 8.0 / dt;
        kbps.push(bps / 1000.0);
        fps.push((b1.2 - b0.2) as f64 / dt);
        receiving += usize::from(b1.1 > b0.1);
        ok += usize::from(source_bps > 0.0 && bps >= a.ok_fraction * source_bps);
    }
    kbps.sort_by(f64::total_cmp);
    fps.sort_by(f64::total_cmp);
    let mut setup_ms: Vec<f64> = viewers
        .iter()
        .filter(|v| v.location.is_some())
        .filter_map(|v| {
            let first = v.counters.first_packet_us.load(Ordering::Relaxed);
            (first > 0).then(|| first.saturating_sub(v.posted_us) as f64 / 1000.0)
        })
        .collect();
    setup_ms.sort_by(f64::total_cmp);
    let never = started - setup_ms.len();

    // Send delay over the window: bucket differences.
    let (b0, b1) = (delay_buckets(&s0.metrics), delay_buckets(&s1.metrics));
    let buckets: Vec<(f64, f64)> = b1.iter().map(|(le, n)| (*le, n - b0.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1))).collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let delay_q = |q: f64| -> Value {
        if total <= 0.0 {
            return Value::Null;
        }
        match buckets.iter().find(|(_, n)| *n >= q * total) {
            Some((le, _)) if le.is_finite() => json!(round(le * 1000.0, 3)),
            _ => json!("+Inf"),
        }
    };

    let tck = clk_tck();
    let cpu = |x: Option<(u64, u64, u64)>, y: Option<(u64, u64, u64)>| -> Value {
        match (x, y) {
            (Some(x), Some(y)) => json!({
                "cpu_cores": round((y.0 - x.0) as f64 / tck / dt, 4),
                "cpu_ticks": y.0 - x.0,
                "rss_mb": round(y.1 as f64 / 1024.0, 1),
                "hwm_mb": round(y.2 as f64 / 1024.0, 1),
            }),
            _ => Value::Null,
        }
    };
    let q = |v: &[f64], p: f64, d: i32| quantile(v, p).map(|x| round(x, d));
    let out = json!({
        "viewers": a.viewers,
        "started": started,
        "start_errors": errors,
        "receiving": receiving,
        "ok": ok,
        "ok_fraction": a.ok_fraction,
        "never_received": never,
        "ramp_s": round(ramp_s, 1),
        "window_s": round(dt, 2),
        "source_kbps": round(source_bps / 1000.0, 1),
        "viewer_kbps": { "min": q(&kbps, 0.0, 1), "p10": q(&kbps, 0.1, 1), "median": q(&kbps, 0.5, 1), "max": q(&kbps, 1.0, 1) },
        "viewer_fps": { "min": q(&fps, 0.0, 2), "median": q(&fps, 0.5, 2) },
        "setup_ms": { "median": q(&setup_ms, 0.5, 0), "p90": q(&setup_ms, 0.9, 0), "max": q(&setup_ms, 1.0, 0) },
        "send_delay_ms": { "count": total, "p50_le": delay_q(0.5), "p99_le": delay_q(0.99), "max_le": delay_q(1.0),
                           "buckets": buckets.iter().map(|(le, n)| json!([if le.is_finite() { json!(round(le * 1000.0, 3)) } else { json!("+Inf") }, n])).collect::<Vec<_>>() },
        "server_sent_kbps": round(delta("cradle_live_bytes_sent_total") * 8.0 / dt / 1000.0, 1),
        "frames_skipped": delta("cradle_live_frames_skipped_total"),
        "live_sessions": sample(&s1.metrics, "cradle_live_sessions"),
        "server": cpu(s0.server, s1.server),
        "client": cpu(s0.client, s1.client),
        "camera_proc": cpu(s0.camera, s1.camera),
        "machine_busy_cores": match (s0.machine, s1.machine) {
            (Some(x), Some(y)) => json!(round((y - x) as f64 / tck / dt, 3)),
            _ => Value::Null,
        },
        "loadavg": std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    });
    eprintln!(
        "whep_load: N={} started={} receiving={} ok(>={:.0}% of {:.0} kbit/s)={} viewer kbit/s min {} median {}; send delay p50 <= {} ms, p99 <= {} ms; server {} cores, client {} cores",
        a.viewers,
        started,
        receiving,
        a.ok_fraction * 100.0,
        source_bps / 1000.0,
        ok,
        out["viewer_kbps"]["min"],
        out["viewer_kbps"]["median"],
        out["send_delay_ms"]["p50_le"],
        out["send_delay_ms"]["p99_le"],
        out["server"]["cpu_cores"],
        out["client"]["cpu_cores"],
    );
    for (e, n) in &errors {
        eprintln!("whep_load: {n} viewer(s) failed to start: {e}");
    }
    println!("{out}");

    // End every session the way a player does, then drop the connections.
    futures::stream::iter(viewers.iter().filter_map(|v| v.location.clone()))
        .map(|loc| {
            let http = http.clone();
            let token = token.clone();
            let url = format!("{}{loc}", a.base);
            async move {
                let _ = http.delete(url).bearer_auth(token.as_str()).send().await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    futures::stream::iter(viewers.iter().filter_map(|v| v.pc.clone()))
        .map(|pc| async move {
            let _ = pc.close().await;
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    Ok(())
}
