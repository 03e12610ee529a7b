"""A WHEP player that is not a browser: aiortc (Python WebRTC, FFmpeg decoding through
PyAV) receives a camera and decodes its frames, as a third-party WHEP client would.

    whep_aiortc.py URL TOKEN SECONDS

URL is the camera's WHEP endpoint (.../api/v1/cameras/{id}/whep); TOKEN is sent as
`Authorization: Bearer`. Runs in the test venv (scripts/install-test-deps.sh installs
aiortc there), not Debian's python.

Prints one JSON object per line on stdout:
  {"event": "refused", "status": n, "body": {...}}        the POST was not answered 201
  {"event": "playing", "location": ..., "ttff_ms": t}     the first decoded frame
  {"event": "done", "frames": n, "width", "height", "codec", "location",
   "stopped_by": "time" | "track_ended" | "connection_<state>",
   "last_frame_wall": unix time of the last decoded frame, "delete_status": n}
Receives for SECONDS at most, or until the server ends the session (the track ends or
the connection closes), then DELETEs the session (WHEP §4.4). Exit 0 when a session
was started; 1 when refused or nothing decoded.
"""
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# aioice leaves 127.0.0.1 out of its host candidates; the test server binds only
# loopback ([live] bind), and a machine may have no other interface.
_host_addresses = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4, use_ipv6):
    addrs = _host_addresses(use_ipv4, use_ipv6)
    return addrs + ["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in addrs else addrs


aioice.ice.get_host_addresses = _with_loopback


def emit(obj):
    print(json.dumps(obj), flush=True)


def request(method, url, token, body=None, content_type=None):
    """(status, headers, body bytes) of a blocking HTTP request."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def negotiated_codec(answer):
    """The first payload type of the answer's video m-line, as a MIME type."""
    pts, names = [], {}
    for line in answer.splitlines():
        if line.startswith("m=video"):
            pts = line.split()[3:]
        elif line.startswith("a=rtpmap:"):
            pt, rest = line[len("a=rtpmap:"):].split(" ", 1)
            names[pt] = rest.split("/")[0]
    return f"video/{names[pts[0]]}" if pts and pts[0] in names else None


async def main(url, token, seconds):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    tracks = asyncio.Queue()
    pc.on("track", lambda t: tracks.put_nowait(t))
    states = asyncio.Queue()
    pc.on("connectionstatechange", lambda: states.put_nowait(pc.connectionState))

    # aiortc gathers every candidate before setLocalDescription returns: no trickle.
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    posted = time.monotonic()
    status, headers, body = await loop.run_in_executor(
        None, request, "POST", url, token, pc.localDescription.sdp.encode(), "application/sdp")
    if status != 201:
        try:
            body = json.loads(body)
        except ValueError:
            body = body.decode(errors="replace")
        emit({"event": "refused", "status": status, "body": body})
        await pc.close()
        return 1
    location = urljoin(url, headers["Location"])
    answer = body.decode()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    frames, width, height, last_wall = 0, None, None, None
    stopped_by = "time"
    deadline = time.monotonic() + seconds
    try:
        track = await asyncio.wait_for(tracks.get(), timeout=10)
        while time.monotonic() < deadline:
            if not states.empty():
                state = states.get_nowait()
                if state in ("failed", "closed"):
                    stopped_by = f"connection_{state}"
                    break
            try:
                frame = await asyncio.wait_for(track.recv(), timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                continue
            except MediaStreamError:
                stopped_by = "track_ended"
                break
            # A decoded picture (av.VideoFrame): it has the camera's size.
            if frame.width and frame.height:
                frames += 1
                width, height, last_wall = frame.width, frame.height, time.time()
                if frames == 1:
                    emit({"event": "playing", "location": location,
                          "ttff_ms": round((time.monotonic() - posted) * 1000, 1)})
    finally:
        delete_status, _, _ = await loop.run_in_executor(None, request, "DELETE", location, token)
        await pc.close()
    emit({"event": "done", "frames": frames, "width": width, "height": height,
          "codec": negotiated_codec(answer), "location": location, "stopped_by": stopped_by,
          "last_frame_wall": last_wall, "delete_status": delete_status})
    return 0 if frames else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: whep_aiortc.py URL TOKEN SECONDS")
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]))))
