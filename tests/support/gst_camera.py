#!/usr/bin/python3
"""A fake third-party RTSP camera for Cradle's integration tests.

Built on Debian's GStreamer RTSP server (python3-gi +
gir1.2-gst-rtsp-server-1.0), i.e. an RTSP implementation that Cradle's code
did not write, so tests exercise real interoperability rather than a mirror
of our own client.

Must run with the system interpreter (/usr/bin/python3): the `gi` bindings
are a Debian package and are not visible to pyenv/venv pythons.

Usage:
    gst_camera.py --port 8554 [--mount /cam] [--codec h264|h265]
                  [--width 1280 --height 720 --fps 25 --bitrate-kbps 2000]
                  [--pattern ball|snow|...]
                  [--gop-frames 50]
                  [--user U --password P [--auth digest|basic]]
                  [--clock-offset-seconds N]

Prints `READY rtsp://127.0.0.1:PORT/MOUNT` on stdout (flushed) once the
server socket is listening.  Exits with status 0 on SIGTERM / SIGINT.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, GObject, Gst, GstRtsp, GstRtspServer  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="RTSP TCP port")
    p.add_argument("--bind", default="127.0.0.1", help="listen address")
    p.add_argument("--mount", default="/cam", help="mount path, e.g. /cam")
    p.add_argument("--codec", choices=("h264", "h265"), default="h264")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--bitrate-kbps", type=int, default=2000)
    p.add_argument(
        "--pattern",
        default="ball",
        help="videotestsrc pattern; 'snow' (noise) makes the encoder spend its "
        "whole --bitrate-kbps, so bitrate changes show in the stream",
    )
    p.add_argument(
        "--gop-frames",
        type=int,
        default=None,
        help="key-frame interval in frames (default: 2 s worth, i.e. 2*fps)",
    )
    p.add_argument("--user", help="require this user name")
    p.add_argument("--password", help="password for --user")
    p.add_argument(
        "--auth",
        choices=("digest", "basic"),
        default="digest",
        help="authentication scheme offered when --user is given",
    )
    p.add_argument(
        "--clock-offset-seconds",
        type=float,
        default=0.0,
        help="make the camera's wall clock (NTP time in RTCP sender reports) "
        "wrong by this many seconds (may be negative)",
    )
    args = p.parse_args(argv)
    if not args.mount.startswith("/"):
        args.mount = "/" + args.mount
    if (args.user is None) != (args.password is None):
        p.error("--user and --password must be given together")
    if args.gop_frames is None:
        args.gop_frames = 2 * args.fps
    return args


def launch_description(args):
    """gst-launch style description of the media pipeline.

    videotestsrc pattern=ball moves, so consecutive frames differ (a frozen
    picture would hide bugs such as repeated/dropped frames); timeoverlay
    burns the running time into the picture for humans looking at footage.
    """
    raw = (
        f"videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 "
        "! timeoverlay ! videoconvert ! video/x-raw,format=I420 "
    )
    if args.codec == "h264":
        # ultrafast: the CI machine has 2 cores and runs several cameras.
        # zerolatency also disables B-frames, like most IP cameras.
        enc = (
            "! x264enc tune=zerolatency speed-preset=ultrafast "
            f"key-int-max={args.gop_frames} bitrate={args.bitrate_kbps} "
            "! video/x-h264,profile=baseline "
            # config-interval=-1: SPS/PPS in-band before every IDR, as cameras do.
            "! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        enc = (
            "! x265enc tune=zerolatency speed-preset=ultrafast "
            f"key-int-max={args.gop_frames} bitrate={args.bitrate_kbps} "
            "! video/x-h265,profile=main "
            "! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    return "( " + raw + enc + " )"


# Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET_SECONDS = 2208988800


def offset_clock_media_gtype():
    """GType of an RTSPMedia subclass whose RTCP sender reports take their NTP
    time from the pipeline clock (see offset_ntp_clock) instead of the host's
    real-time clock.

    Defined lazily: registering a Python subclass of RTSPMedia makes PyGObject
    print a (harmless) GLib warning, so only pay for it when asked to."""

    class OffsetClockMedia(GstRtspServer.RTSPMedia):
        def do_setup_rtpbin(self, rtpbin):
            # ntp-time-source=clock-time (3): the SR's NTP timestamp is the
            # pipeline clock's time, used as-is (no 1970->1900 conversion).
            # (use-pipeline-clock=true would be the running time instead:
            # both verified against GStreamer 1.22.)
            rtpbin.set_property("ntp-time-source", 3)
            return True

    return OffsetClockMedia.__gtype__


def offset_ntp_clock(offset_seconds):
    """A system clock that reads NTP time (seconds since 1900) that is wrong by
    offset_seconds.  Used as the media pipeline's clock; only the RTCP sender
    reports' wall-clock time is affected - the pipeline just needs a
    monotonic-enough clock and does not care about its epoch."""
    clock = GObject.new(Gst.SystemClock, clock_type=Gst.ClockType.REALTIME)
    internal = clock.get_internal_time()  # Unix-epoch nanoseconds
    external = internal + int(
        (NTP_UNIX_OFFSET_SECONDS + offset_seconds) * Gst.SECOND
    )
    if external < 0:
        raise SystemExit("--clock-offset-seconds puts the clock before 1900")
    clock.set_calibration(internal, external, 1, 1)
    return clock


def make_factory(args):
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_description(args))
    # One pipeline for all clients, as a real camera has one encoder; tests
    # connect several readers (recorder + live view) at once.
    factory.set_shared(True)
    # Per the test plan: with a shared media, publish the clock and offset so
    # a client joining later does not disturb the timestamps seen by others.
    factory.set_publish_clock_mode(
        GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET
    )
    if args.clock_offset_seconds:
        factory.set_media_gtype(offset_clock_media_gtype())
        factory.set_clock(offset_ntp_clock(args.clock_offset_seconds))
    if args.user is not None:
        # Only the role named after the user may see and build the media;
        # anonymous clients get 401.
        factory.add_role_from_structure(
            Gst.Structure.new_from_string(
                f"{args.user}, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"
            )
        )
    return factory


def make_auth(args):
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", args.user)
    if args.auth == "digest":
        auth.add_digest(args.user, args.password, token)
        # Offer only Digest in WWW-Authenticate (the default is Basic).
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(
            GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token
        )
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    return auth


def main(argv):
    args = parse_args(argv)
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    if args.user is not None:
        server.set_auth(make_auth(args))
    server.get_mount_points().add_factory(args.mount, make_factory(args))

    loop = GLib.MainLoop()
    # attach() binds and listens; it returns 0 on failure (e.g. port in use).
    if server.attach(None) == 0:
        print(f"gst_camera: cannot listen on {args.bind}:{args.port}", file=sys.stderr)
        return 1

    def quit_loop():
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_loop)

    host = "127.0.0.1" if args.bind in ("0.0.0.0", "::") else args.bind
    print(f"READY rtsp://{host}:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
