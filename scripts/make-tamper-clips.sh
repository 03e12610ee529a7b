#!/usr/bin/env bash
# Make the clips the tamper tests play through `cradle camsim --clip NAME=PATH`.
#
#   scripts/make-tamper-clips.sh OUT_DIR
#
# Writes five Annex B H.264 streams, 1280x720, 25 fps, 1500 frames (60 s) each,
# about 0.5-1 Mbit/s, ~20 s to make on one core:
#   normal.h264   a room, all the time: the tamper checks must stay quiet
#   black.h264    20 s of the room, then 40 s black with sensor noise (lens covered)
#   frozen.h264   20 s of the room, then 40 s of one picture (frames still flow)
#   blurred.h264  20 s of the room, then 40 s of it under a Gaussian blur (sigma 8 px)
#   shifted.h264  20 s of the room, then 40 s of it panned by 30 % of the width
#                 (a camera knocked aside)
# Each loops back to the room after 60 s, so a tamper alarm raised in the second
# part clears again in the first part of the next loop.
#
# The first 20 s are the same pictures in every clip, so the tamper detector's
# automatic reference (the median of its first 6 healthy pictures, one per check)
# is the same room for all five cameras.
#
# The room (a 1792x720 canvas seen through a 1280x720 window, so the camera can be
# turned): a wall texture (one picture of the rule-30 cellular automaton, in 8 px
# cells, toned down), furniture (still boxes), three children (boxes moving on paths
# that repeat every 60 s, so the loop does not jump), lights that drift by ±3 %,
# and fresh sensor noise in every frame. Structure at every scale the checks look
# at, change in every picture, like a classroom camera.
#
# What camsim needs (see scripts/make-clips.sh and src/camsim/extra.rs): an IDR
# first and every 25 frames (1 s: a new keyframe for every 1 s snapshot), closed
# GOPs (no scene cuts), no B-frames, an AUD in front of every picture, parameter
# sets in front of every IDR. The fault is applied after the noise, so the frozen
# picture is exactly still and the blurred one really soft. One ffmpeg run per clip
# (one set of parameter sets for the whole clip, as camsim requires).
#
# Deterministic-ish: fixed seeds and a single-threaded encoder make reruns with the
# same ffmpeg/x264 byte-identical. Checked with Debian 12's ffmpeg 5.1 (libx264 164).
# After making them, the script checks with ffmpeg that each clip is what it says
# (frame count, no B-frames; the frozen part's keyframes decode to identical
# pictures; signalstats of the black and blurred parts) and fails if not.
set -euo pipefail

die() {
    printf 'make-tamper-clips.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 OUT_DIR"
command -v ffmpeg >/dev/null || die "ffmpeg not found (apt-get install ffmpeg)"
command -v ffprobe >/dev/null || die "ffprobe not found (apt-get install ffmpeg)"
out=$1
mkdir -p "$out"

readonly FRAMES=1500 # 60 s at 25 fps
readonly FAULT_AT=20 # seconds of the room before the fault
readonly SHIFT=384   # 30 % of 1280, a multiple of 8 (the wall's cells)

# The room on its 1792x720 canvas, without noise. Colours are the furniture and the
# children; lutyuv tones the automaton (black/white) down to a grey wall (70..146).
room() {
    local f="cellauto=rule=30:size=224x90:rate=25:seed=7:full=1"
    # One picture of the automaton, held: a still wall.
    f+=",trim=end_frame=1,loop=loop=-1:size=1:start=0,setpts=N/25/TB"
    f+=",scale=1792:720:flags=neighbor,format=yuv420p,lutyuv=y='val*0.30+70':u=128:v=128"
    # Furniture: a rug, a cupboard, a bench, shelves, a play mat, a picture.
    f+=",drawbox=x=60:y=380:w=300:h=200:c=0x6b4a2b:t=fill"
    f+=",drawbox=x=420:y=90:w=160:h=260:c=0xd8d0c0:t=fill"
    f+=",drawbox=x=700:y=450:w=420:h=120:c=0x2f4f7f:t=fill"
    f+=",drawbox=x=1200:y=150:w=220:h=300:c=0x8f2f2f:t=fill"
    f+=",drawbox=x=1500:y=420:w=240:h=220:c=0x3f6f3f:t=fill"
    f+=",drawbox=x=980:y=60:w=120:h=90:c=0xf0e68c:t=fill"
    # Children: periods divide 60 s, so the clip loops without a jump.
    f+=",drawbox=x='300+250*sin(2*PI*t/20)':y='300+120*sin(2*PI*t/12)':w=90:h=160:c=0xff8c00:t=fill"
    f+=",drawbox=x='900+300*sin(2*PI*t/15+1)':y='250+100*cos(2*PI*t/10)':w=80:h=140:c=0x00ced1:t=fill"
    f+=",drawbox=x='1400+200*cos(2*PI*t/30)':y='400+80*sin(2*PI*t/6)':w=100:h=120:c=0xff69b4:t=fill"
    # The lights drift slowly.
    f+=",eq=brightness='0.03*sin(2*PI*t/30)':eval=frame"
    printf '%s' "$f"
}

# $1 = crop x expression (where the camera looks), $2 = filters before the noise,
# $3 = filters after it.
graph() {
    printf '%s,crop=1280:720:x=%s:y=0%s,noise=alls=8:allf=t+u:all_seed=12345%s,format=yuv420p' \
        "$(room)" "$1" "$2" "$3"
}

# $1 = clip name, $2 = filter graph
encode() {
    ffmpeg -hide_banner -loglevel warning -nostdin -y \
        -f lavfi -i "$2" \
        -frames:v "$FRAMES" -an \
        -c:v libx264 -preset veryfast -profile:v high -threads 1 \
        -crf 23 -maxrate 2M -bufsize 2M \
        -x264-params "keyint=25:min-keyint=25:scenecut=0:bframes=0:aud=1:repeat-headers=1" \
        -bsf:v filter_units=remove_types=6 \
        -f h264 "$out/$1.h264"
}

after="gte(t,$FAULT_AT)"
first=$((FAULT_AT * 25))
declare -A graphs=(
    [normal]="$(graph 0 "" "")"
    # Black (limited-range 16) before the noise: a covered lens still shows sensor noise.
    [black]="$(graph 0 ",drawbox=x=0:y=0:w=iw:h=ih:c=black:t=fill:enable='$after'" "")"
    # Every frame from $first on is frame $first again.
    [frozen]="$(graph 0 "" ",split[live][still];[live][still]freezeframes=first=$first:last=$((FRAMES - 1)):replace=$first")"
    [blurred]="$(graph 0 "" ",gblur=sigma=8:enable='$after'")"
    [shifted]="$(graph "'if($after,$SHIFT,0)'" "" "")"
)

pids=()
for name in "${!graphs[@]}"; do
    encode "$name" "${graphs[$name]}" &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid" || die "ffmpeg failed (see above)"
done

# ---- check that each clip is what it claims --------------------------------------------

# Frame count and no B-frames, from ffprobe (an independent parser).
for name in "${!graphs[@]}"; do
    f="$out/$name.h264"
    info=$(ffprobe -v error -count_frames -select_streams v:0 \
        -show_entries stream=width,height,has_b_frames,nb_read_frames -of csv=p=0 "$f")
    [[ "$info" == "1280,720,0,$FRAMES" ]] ||
        die "$f: ffprobe says width,height,has_b_frames,frames = $info, not 1280,720,0,$FRAMES"
    types=$(ffprobe -v error -select_streams v:0 -show_entries frame=pict_type -of csv=p=0 "$f" |
        sort | uniq -c | tr -s ' ' | tr '\n' ' ')
    [[ "$types" != *B* ]] || die "$f has B-frames: $types"
done

# The frozen part's keyframes decode to identical pictures (what a stuck camera sends).
hashes=$(ffmpeg -hide_banner -loglevel error -nostdin -skip_frame nokey -i "$out/frozen.h264" \
    -f framemd5 - | grep -v '^#' | awk -F, '{print $NF}')
frozen_keys=$(sed -n "$((FAULT_AT + 1)),\$p" <<<"$hashes" | sort -u | wc -l)
live_keys=$(sed -n "1,${FAULT_AT}p" <<<"$hashes" | sort -u | wc -l)
[[ "$frozen_keys" -eq 1 ]] ||
    die "frozen.h264: the keyframes after ${FAULT_AT} s decode to $frozen_keys different pictures, not 1"
[[ "$live_keys" -eq "$FAULT_AT" ]] ||
    die "frozen.h264: the first $FAULT_AT keyframes decode to only $live_keys different pictures"

# Frames [$2 s, $2 + $3 s) of a raw stream, which has no timestamps to seek by.
# $1 = clip; the filters in $4 follow.
part() {
    ffmpeg -hide_banner -loglevel error -nostdin -i "$out/$1.h264" \
        -filter_complex "trim=start_frame=$(($2 * 25)):end_frame=$((($2 + $3) * 25)),$4,metadata=print:file=-" \
        -f null -
}

# Mean luma (YAVG) and its spread of the live and the faulty part, from signalstats.
# $1 = clip, $2 = first second, $3 = duration: prints "YAVG YLOW YHIGH" averaged.
luma() {
    part "$1" "$2" "$3" signalstats |
        awk -F= '/YAVG/{a+=$2;n++} /YLOW/{l+=$2} /YHIGH/{h+=$2} END{printf "%.1f %.1f %.1f\n", a/n, l/n, h/n}'
}
read -r avg low high <<<"$(luma black 30 5)"
awk -v a="$avg" -v l="$low" -v h="$high" 'BEGIN{exit !(a < 24 && h - l < 24)}' ||
    die "black.h264 after ${FAULT_AT} s: YAVG $avg, YLOW..YHIGH $low..$high is not black"
read -r avg low high <<<"$(luma normal 30 5)"
awk -v a="$avg" -v l="$low" -v h="$high" 'BEGIN{exit !(a > 60 && h - l > 60)}' ||
    die "normal.h264: YAVG $avg, YLOW..YHIGH $low..$high looks too flat for a room"

# Blur: the mean absolute difference between a picture and itself blurred a little
# more is small when it is already soft. Sharp room: several levels; blurred: under 1.
detail() {
    part "$1" "$2" 1 "split[a][b];[b]gblur=sigma=1.5[c];[a][c]blend=all_mode=difference,signalstats" | awk -F= '/YAVG/{a+=$2;n++} END{printf "%.2f\n", a/n}'
}
sharp=$(detail blurred 10)
soft=$(detail blurred 30)
awk -v s="$sharp" -v b="$soft" 'BEGIN{exit !(b < 0.35 * s)}' ||
    die "blurred.h264: detail $sharp before ${FAULT_AT} s and $soft after: not blurred enough"

for name in normal black frozen blurred shifted; do
    printf '%s: %s bytes\n' "$out/$name.h264" "$(stat -c %s "$out/$name.h264")" >&2
done
printf 'checked: 1280x720, %s frames, no B-frames; frozen keyframes identical; black YAVG < 24; blur detail %s -> %s\n' \
    "$FRAMES" "$sharp" "$soft" >&2
