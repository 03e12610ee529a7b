#!/usr/bin/env bash
# Regenerate the clips that `cradle camsim` embeds and loops forever.
#
#   scripts/make-clips.sh [OUT_DIR]      (default: assets/clips next to this script)
#
# Writes two Annex B elementary streams:
#   h264-1080p.h264  H.264 High, 1920x1080, 25 fps, 150 frames (6 s), ~4 Mbit/s
#   h265-720p.h265   H.265 Main, 1280x720,  25 fps, 150 frames (6 s), ~1.5 Mbit/s
#
# What camsim relies on (do not change without changing src/camsim/clip.rs):
#   * IDR every 50 frames (2 s) and the first frame is an IDR, so the clip can
#     loop at frame 150 without breaking decoding (closed GOPs, no scene cuts).
#   * No B-frames: decode order == presentation order, so frame k of the loop
#     is simply sent at rtptime base + k*3600.
#   * Access unit delimiters (aud=1) in front of every picture, so access
#     units are split on AUDs instead of by parsing slice headers.
#   * Parameter sets repeated before every IDR (camsim also re-inserts them).
#
# The picture is testsrc2 (moving colour bars, counter, gradients) with
# seeded temporal noise on top, so the encoder has real work to do and the
# bitrate is near the target instead of a trivially compressible still.
# Output is "deterministic-ish": fixed seeds and single-threaded encoders make
# reruns with the same ffmpeg/x264/x265 versions byte-identical; different
# library versions produce different (but equivalent) bytes.
# Checked with Debian 12's ffmpeg 5.1 (libx264 164, libx265 3.5).
set -euo pipefail

die() {
    printf 'make-clips.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

command -v ffmpeg >/dev/null || die "ffmpeg not found (apt-get install ffmpeg)"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-"$here/../assets/clips"}
mkdir -p "$out"

readonly FRAMES=150

# $1 = size, $2 = noise strength. testsrc2 at exactly 25 fps; noise with a
# fixed seed and `t` (temporal) so every frame differs.
source_filter() {
    printf 'testsrc2=size=%s:rate=25,noise=alls=%s:allf=t+u:all_seed=12345,format=yuv420p' "$1" "$2"
}

ffmpeg -hide_banner -loglevel warning -y \
    -f lavfi -i "$(source_filter 1920x1080 10)" \
    -frames:v "$FRAMES" -an \
    -c:v libx264 -preset veryfast -profile:v high -threads 1 \
    -b:v 4M -maxrate 4M -bufsize 4M \
    -x264-params "keyint=50:min-keyint=50:scenecut=0:bframes=0:aud=1:repeat-headers=1" \
    -bsf:v filter_units=remove_types=6 \
    -f h264 "$out/h264-1080p.h264"

ffmpeg -hide_banner -loglevel warning -y \
    -f lavfi -i "$(source_filter 1280x720 10)" \
    -frames:v "$FRAMES" -an \
    -c:v libx265 -preset veryfast -profile:v main \
    -b:v 1500k -maxrate 1500k -bufsize 1500k \
    -x265-params "log-level=error:keyint=50:min-keyint=50:scenecut=0:bframes=0:open-gop=0:aud=1:repeat-headers=1:frame-threads=1:pools=none:info=0" \
    -f hevc "$out/h265-720p.h265"

for f in "$out/h264-1080p.h264" "$out/h265-720p.h265"; do
    printf '%s: %s bytes\n' "$f" "$(stat -c %s "$f")" >&2
done
