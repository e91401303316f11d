#!/bin/sh
# Regenerates the greeting and apology prompts fsbridge plays (Turkish and English).
#
# Output: 8000 Hz, mono, 16-bit signed PCM WAV, silence trimmed, peak-normalised to -3 dBFS.
# FreeSWITCH plays such a file on any channel without transcoding surprises, and it is the
# format the bundled default profile expects.
#
#   ./make-greeting.sh                      # the four standard files with espeak-ng (offline)
#   OPENAI_API_KEY=... ./make-greeting.sh --tts openai     # same files with OpenAI TTS
#   ./make-greeting.sh --lang tr --text "Hoş geldiniz." --output /tmp/welcome.wav
#
# Needs: sox, and espeak-ng (default engine) or curl (--tts openai).
set -eu

usage() {
	cat <<'EOF'
Usage: make-greeting.sh [options]

Makes greeting.wav, apology.wav (Turkish) and greeting-en.wav, apology-en.wav (English), 8 kHz mono
16-bit PCM, in the output directory, and copies them into the package assets (fsbridge/assets/
greeting-tr-8k.wav, ...) when that directory exists next to this script.

Options:
  --tts espeak|openai   speech engine (default espeak; openai needs OPENAI_API_KEY and curl)
  --voice NAME          OpenAI voice (default marin) or espeak-ng voice (default: per language)
  --out DIR             output directory for the four files (default: this script's directory)
  --assets DIR          also copy the files here with their -8k names (default: ../fsbridge/assets)
  --no-assets           do not copy into the package assets
  --lang tr|en          with --text/--output: the language of a single custom prompt
  --text TEXT           make one custom prompt from TEXT instead of the four standard ones
  --output FILE         where the single custom prompt goes (needs --text)
  -h, --help            this help

Environment: OPENAI_API_KEY (for --tts openai), OPENAI_BASE_URL (default https://api.openai.com/v1),
OPENAI_TTS_MODEL (default gpt-4o-mini-tts).
EOF
}

die() {
	echo "make-greeting.sh: $*" >&2
	exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
tts=espeak
voice=
out=$here
assets=$here/../fsbridge/assets
copy_assets=1
lang=tr
text=
output=

while [ $# -gt 0 ]; do
	case $1 in
	--tts) [ $# -ge 2 ] || die "--tts needs a value"; tts=$2; shift 2 ;;
	--voice) [ $# -ge 2 ] || die "--voice needs a value"; voice=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a value"; out=$2; shift 2 ;;
	--assets) [ $# -ge 2 ] || die "--assets needs a value"; assets=$2; shift 2 ;;
	--no-assets) copy_assets=0; shift ;;
	--lang) [ $# -ge 2 ] || die "--lang needs a value"; lang=$2; shift 2 ;;
	--text) [ $# -ge 2 ] || die "--text needs a value"; text=$2; shift 2 ;;
	--output) [ $# -ge 2 ] || die "--output needs a value"; output=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

case $tts in
espeak) command -v espeak-ng >/dev/null || die "espeak-ng not found (apt-get install -y espeak-ng)" ;;
openai)
	command -v curl >/dev/null || die "curl not found"
	[ -n "${OPENAI_API_KEY:-}" ] || die "--tts openai needs OPENAI_API_KEY in the environment"
	;;
*) die "--tts must be espeak or openai, not '$tts'" ;;
esac
command -v sox >/dev/null || die "sox not found (apt-get install -y sox)"
case $lang in tr | en) ;; *) die "--lang must be tr or en, not '$lang'" ;; esac
if [ -n "$output" ] && [ -z "$text" ]; then die "--output needs --text"; fi
if [ -n "$text" ] && [ -z "$output" ]; then die "--text needs --output"; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# json_string TEXT: TEXT as a JSON string literal (prompts are plain sentences, no control chars).
json_string() {
	printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# synth LANG TEXT RAWFILE: speech into RAWFILE (any format sox reads; the type is in $raw_opts).
synth() {
	case $tts in
	espeak)
		v=$voice
		if [ -z "$v" ]; then
			if [ "$1" = tr ]; then v=tr; else v=en-us; fi
		fi
		# -s 150: a touch slower than the default reads better on a narrowband phone line.
		espeak-ng -v "$v" -s 150 -w "$3" "$2"
		raw_opts=
		;;
	openai)
		# The key goes through a private header file, never on the command line (ps shows argv).
		umask 077
		printf 'Authorization: Bearer %s\n' "$OPENAI_API_KEY" >"$tmp/auth"
		printf '{"model":%s,"voice":%s,"input":%s,"response_format":"pcm"}' \
			"$(json_string "${OPENAI_TTS_MODEL:-gpt-4o-mini-tts}")" \
			"$(json_string "${voice:-marin}")" "$(json_string "$2")" >"$tmp/req.json"
		code=$(curl -sS -o "$3" -w '%{http_code}' -X POST \
			"${OPENAI_BASE_URL:-https://api.openai.com/v1}/audio/speech" \
			-H @"$tmp/auth" -H 'Content-Type: application/json' --data-binary @"$tmp/req.json") ||
			die "OpenAI TTS request failed"
		rm -f "$tmp/auth"
		if [ "$code" != 200 ]; then
			echo "make-greeting.sh: OpenAI TTS answered HTTP $code:" >&2
			head -c 600 "$3" >&2 || true
			echo >&2
			exit 1
		fi
		# response_format pcm = raw 24 kHz, 16-bit signed little-endian, mono.
		raw_opts="-t raw -r 24000 -e signed-integer -b 16 -c 1 -L"
		;;
	esac
}

# render LANG TEXT OUT: synthesise, trim leading/trailing silence, mono, 8 kHz, s16, -3 dBFS peak.
render() {
	synth "$1" "$2" "$tmp/speech.raw"
	# -R: repeatable dither, so regenerating unchanged text gives byte-identical files.
	# shellcheck disable=SC2086  # raw_opts is a list of sox format options (or empty)
	sox -R $raw_opts "$tmp/speech.raw" -r 8000 -c 1 -b 16 -e signed-integer "$tmp/out.wav" \
		silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
		rate -v 8000 pad 0.05 0.15 norm -3
	mkdir -p "$(dirname "$3")"
	mv -f "$tmp/out.wav" "$3"
	chmod 0644 "$3"
	echo "wrote $3 ($(soxi -D "$3") s)"
}

if [ -n "$text" ]; then
	render "$lang" "$text" "$output"
	exit 0
fi

mkdir -p "$out"
render tr "Merhaba, ben sanal asistanınız. Size nasıl yardımcı olabilirim?" "$out/greeting.wav"
render tr "Üzgünüm, şu anda hizmet veremiyorum. Lütfen daha sonra tekrar arayın." "$out/apology.wav"
render en "Hello, I am your virtual assistant. How can I help you?" "$out/greeting-en.wav"
render en "I am sorry, I cannot help you right now. Please call again later." "$out/apology-en.wav"

if [ "$copy_assets" = 1 ] && [ -d "$assets" ]; then
	cp -f "$out/greeting.wav" "$assets/greeting-tr-8k.wav"
	cp -f "$out/apology.wav" "$assets/apology-tr-8k.wav"
	cp -f "$out/greeting-en.wav" "$assets/greeting-en-8k.wav"
	cp -f "$out/apology-en.wav" "$assets/apology-en-8k.wav"
	echo "copied into $(cd "$assets" && pwd)"
fi
