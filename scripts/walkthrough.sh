#!/usr/bin/env bash
# The Loopwise quickstart, by hand, against the Loopwise emulator:
#
#   metadata -> register a public client -> PKCE -> login + consent pages ->
#   code exchange -> userinfo -> API call -> refresh -> replay of the old refresh
#   token (invalid_grant, whole grant revoked) -> emulator counters.
#
# Usage:
#   loopgate emulator --listen 127.0.0.1:8081 &      # without --auto-approve
#   scripts/walkthrough.sh [BASE_URL]                # default http://127.0.0.1:8081
#
# Every command is printed before it runs, as a "$ ..." line that can be pasted into
# a shell; the values the walk-through picks up along the way are printed as
# "$ NAME=value" lines so the commands that use them can be pasted too. The script
# adds only its own checking flags to each curl (-S, --max-time, -o, -D, -w).
#
# Each step checks the HTTP status and the body; any surprise stops the script with a
# non-zero exit status, so CI can run it as a test. Needs only bash, curl, sed, grep,
# cut, tr, base64, head, mktemp and sha256sum (or shasum on macOS).

set -euo pipefail

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac
if [[ $# -gt 1 ]]; then
    usage >&2
    exit 64
fi

BASE=${1:-http://127.0.0.1:8081}
BASE=${BASE%/}
REDIRECT_URI=http://127.0.0.1:9999/callback

STEP="setup"
STATUS=""
BODY=""

die() {
    {
        printf '\nwalkthrough: FAILED at step %s: %s\n' "$STEP" "$*"
        if [[ -n $STATUS ]]; then
            printf 'last response: HTTP %s\n' "$STATUS"
            if [[ -n $BODY ]]; then
                printf '%s\n' "${BODY:0:2000}"
            fi
        fi
    } >&2
    exit 1
}

for tool in curl sed grep cut tr base64 head mktemp; do
    command -v "$tool" >/dev/null || die "\`$tool\` is not installed"
done
if command -v sha256sum >/dev/null; then
    sha256_hex() { sha256sum | cut -d' ' -f1; }
elif command -v shasum >/dev/null; then # macOS
    sha256_hex() { shasum -a 256 | cut -d' ' -f1; }
else
    die "\`sha256sum\` is not installed"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/loopwise-walkthrough.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
JAR=$TMP/cookies.txt

step() {
    STEP=$1
    STATUS=""
    BODY=""
    printf '\n### %s. %s\n' "$1" "$2"
}

# Prints a shell assignment the reader can paste.
show_var() {
    printf '$ %s=%s\n' "$1" "${!1}"
}

# call EXPECTED_STATUS 'curl ...' [HINT]
# Prints the command, runs it (with -o/-D/-w added to capture the response), and fails
# unless the status is EXPECTED_STATUS (adding HINT to the message). Leaves STATUS, BODY
# and $TMP/headers.
call() {
    local expected=$1 cmd=$2 hint=${3:-}
    printf '$ %s\n' "$cmd"
    [[ $cmd == "curl "* ]] || die "internal: not a curl command: $cmd"
    local run="curl -S --max-time 15 -o \"\$TMP/body\" -D \"\$TMP/headers\" -w '%{http_code}' ${cmd#curl }"
    : >"$TMP/body"
    : >"$TMP/headers"
    if ! STATUS=$(eval "$run"); then
        STATUS=""
        die "curl could not complete the request (is the emulator running at $BASE?)"
    fi
    BODY=$(<"$TMP/body")
    local html=""
    if grep -qi '^content-type: *text/html' "$TMP/headers"; then
        html=yes
        printf '# -> HTTP %s, an HTML page (%s bytes)\n' "$STATUS" "${#BODY}"
    elif [[ -n $BODY ]]; then
        printf '# -> HTTP %s\n%s\n' "$STATUS" "$BODY"
    else
        printf '# -> HTTP %s (empty body)\n' "$STATUS"
    fi
    if [[ $STATUS != "$expected" ]]; then
        if [[ -n $html ]]; then
            # The emulator's error page: keep just the error code and description.
            BODY=$(printf '%s' "$BODY" | sed -n 's/.*<code id="error">\([^<]*\)<\/code>.*<p id="error-description">\([^<]*\)<\/p>.*/\1: \2/p')
        fi
        local location
        location=$(header location)
        [[ -z $location ]] || BODY="${BODY:+$BODY
}Location: $location"
        die "expected HTTP $expected, got HTTP $STATUS${hint:+ ($hint)}"
    fi
}

# A string member of the (single-line) JSON in BODY; empty when absent.
json_str() {
    printf '%s' "$BODY" | sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p'
}

# A number member of the JSON in BODY; empty when absent.
json_num() {
    printf '%s' "$BODY" | sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p'
}

# The value of a hidden form field in the HTML in BODY.
form_field() {
    printf '%s' "$BODY" | sed -n 's/.*name="'"$1"'" value="\([^"]*\)".*/\1/p'
}

# A response header (first one, without CR).
header() {
    grep -i "^$1:" "$TMP/headers" | cut -d' ' -f2- | tr -d '\r' | head -n 1 || true
}

expect_body() {
    grep -q -- "$1" <<<"$BODY" || die "$2"
}

printf '$ BASE=%s\n' "$BASE"
printf '$ REDIRECT_URI=%s\n' "$REDIRECT_URI"
printf '$ JAR=%s\n' "$JAR"

# ---------------------------------------------------------------------------------
step 1 "Authorization server metadata (RFC 8414)"
call 200 'curl -s "$BASE/.well-known/oauth-authorization-server"'
[[ -n $(json_str issuer) ]] || die "metadata has no issuer"
expect_body '"code_challenge_methods_supported":\["S256"\]' "metadata does not advertise PKCE S256 only"
for e in authorization_endpoint:/oauth/authorize token_endpoint:/api/oauth/token \
    revocation_endpoint:/api/oauth/revoke registration_endpoint:/api/oauth/register; do
    url=$(json_str "${e%%:*}")
    [[ $url == *"${e#*:}" ]] || die "metadata ${e%%:*} is '$url', expected it to end in ${e#*:}"
done

# ---------------------------------------------------------------------------------
step 2 "Register a public client (RFC 7591)"
read -r -d '' CMD <<'EOF' || true
curl -s "$BASE/api/oauth/register" -H 'Content-Type: application/json' -d '{
      "client_name": "Walkthrough",
      "redirect_uris": ["http://127.0.0.1:9999/callback"],
      "grant_types": ["authorization_code", "refresh_token"],
      "response_types": ["code"],
      "token_endpoint_auth_method": "none"
    }'
EOF
call 201 "$CMD"
CLIENT_ID=$(json_str client_id)
[[ -n $CLIENT_ID ]] || die "no client_id in the registration response"
[[ -z $(json_str client_secret) ]] || die "a public client must not get a client_secret"
expect_body '"token_endpoint_auth_method":"none"' "the client was not registered as public"
show_var CLIENT_ID

# ---------------------------------------------------------------------------------
step 3 "PKCE: a code verifier and its S256 challenge (RFC 7636)"
# 32 random bytes, base64url without padding: 43 characters.
# shellcheck disable=SC2016
printf '$ %s\n' 'VERIFIER=$(head -c 32 /dev/urandom | base64 | tr "+/" "-_" | tr -d "=\n")'
VERIFIER=$(head -c 32 /dev/urandom | base64 | tr "+/" "-_" | tr -d "=\n")
show_var VERIFIER
# BASE64URL(SHA256(verifier)): hex digest -> \xHH escapes -> raw bytes -> base64url.
# shellcheck disable=SC2016
printf '$ %s\n' 'CHALLENGE=$(printf %b "$(printf %s "$VERIFIER" | sha256sum | cut -d" " -f1 | sed "s/../\\\\x&/g")" | base64 | tr "+/" "-_" | tr -d "=\n")'
CHALLENGE=$(printf %b "$(printf %s "$VERIFIER" | sha256_hex | sed "s/../\\\\x&/g")" | base64 | tr "+/" "-_" | tr -d "=\n")
show_var CHALLENGE
[[ ${#VERIFIER} -eq 43 ]] || die "the verifier is ${#VERIFIER} characters, expected 43"
[[ $CHALLENGE =~ ^[A-Za-z0-9_-]{43}$ ]] || die "the challenge '$CHALLENGE' is not 43 base64url characters"
STATE=$(head -c 12 /dev/urandom | base64 | tr "+/" "-_" | tr -d "=\n")
show_var STATE

# ---------------------------------------------------------------------------------
step 4a "Authorization request: the login page"
call 200 'curl -s -c "$JAR" -G "$BASE/oauth/authorize" \
    -d response_type=code \
    --data-urlencode "client_id=$CLIENT_ID" \
    --data-urlencode "redirect_uri=$REDIRECT_URI" \
    --data-urlencode "scope=read courses:read" \
    --data-urlencode "state=$STATE" \
    --data-urlencode "code_challenge=$CHALLENGE" \
    -d code_challenge_method=S256' \
    "a redirect instead of the login page: is the emulator running with --auto-approve?"
expect_body 'action="/oauth/authorize/login"' "this is not the login page (is the emulator running with --auto-approve?)"
REQUEST_ID=$(form_field request_id)
CSRF=$(form_field csrf)
[[ -n $REQUEST_ID && -n $CSRF ]] || die "could not find request_id and csrf in the login form"
grep -q "lw_authz_${REQUEST_ID:0:16}" "$JAR" || die "the login page did not set the lw_authz_${REQUEST_ID:0:16} cookie"
printf '# the page set the cookie lw_authz_%s (binds the forms to this "browser")\n' "${REQUEST_ID:0:16}"
show_var REQUEST_ID
show_var CSRF

step 4b "Sign in as the demo teacher, grace: the consent page"
call 200 'curl -s -b "$JAR" -c "$JAR" "$BASE/oauth/authorize/login" \
    --data-urlencode "request_id=$REQUEST_ID" \
    --data-urlencode "csrf=$CSRF" \
    -d user=grace'
expect_body 'action="/oauth/authorize/consent"' "this is not the consent page"
expect_body 'Grace Hopper' "the consent page is not signed in as Grace Hopper"
expect_body '<code>courses:read</code>' "the consent page does not list courses:read"

step 4c "Approve: a 303 back to the client with the code (not followed)"
call 303 'curl -s -b "$JAR" -c "$JAR" "$BASE/oauth/authorize/consent" \
    --data-urlencode "request_id=$REQUEST_ID" \
    --data-urlencode "csrf=$CSRF" \
    -d decision=approve'
LOCATION=$(header location)
printf '# Location: %s\n' "$LOCATION"
[[ $LOCATION == "$REDIRECT_URI?"* ]] || die "the redirect goes to '$LOCATION', not to $REDIRECT_URI"
[[ $LOCATION != *"error="* ]] || die "the redirect carries an error: $LOCATION"
CODE=$(printf '%s' "$LOCATION" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
[[ $CODE =~ ^[A-Za-z0-9_-]+$ ]] || die "no usable code in '$LOCATION'"
[[ $LOCATION == *"state=$STATE"* ]] || die "the redirect does not carry our state back"
show_var CODE

# ---------------------------------------------------------------------------------
step 5 "Exchange the code (with the verifier) for tokens"
call 200 'curl -s "$BASE/api/oauth/token" \
    -d grant_type=authorization_code \
    --data-urlencode "code=$CODE" \
    --data-urlencode "redirect_uri=$REDIRECT_URI" \
    --data-urlencode "client_id=$CLIENT_ID" \
    --data-urlencode "code_verifier=$VERIFIER"'
ACCESS_TOKEN=$(json_str access_token)
REFRESH_TOKEN=$(json_str refresh_token)
[[ -n $ACCESS_TOKEN && -n $REFRESH_TOKEN ]] || die "the token response lacks access_token or refresh_token"
[[ $(json_str token_type) == Bearer ]] || die "token_type is not Bearer"
[[ -n $(json_num expires_in) ]] || die "the token response has no expires_in"
[[ $(json_str scope) == "read courses:read" ]] || die "granted scope is '$(json_str scope)', expected 'read courses:read'"
show_var ACCESS_TOKEN
show_var REFRESH_TOKEN

# ---------------------------------------------------------------------------------
step 6 "Who is this? (userinfo)"
call 200 'curl -s "$BASE/api/oauth/userinfo" -H "Authorization: Bearer $ACCESS_TOKEN"'
[[ $(json_str sub) == grace ]] || die "userinfo sub is '$(json_str sub)', expected grace"
expect_body '"roles":\["teacher"\]' "grace should have the roles [\"teacher\"]"

# ---------------------------------------------------------------------------------
step 7 "Call the API (needs courses:read or read)"
call 200 'curl -s "$BASE/api/v1/courses" -H "Authorization: Bearer $ACCESS_TOKEN"'
expect_body '"courses":\[' "the response has no courses"

# ---------------------------------------------------------------------------------
step 8 "Refresh: new access token AND new refresh token (rotation)"
call 200 'curl -s "$BASE/api/oauth/token" \
    -d grant_type=refresh_token \
    --data-urlencode "refresh_token=$REFRESH_TOKEN" \
    --data-urlencode "client_id=$CLIENT_ID"'
NEW_ACCESS_TOKEN=$(json_str access_token)
NEW_REFRESH_TOKEN=$(json_str refresh_token)
[[ -n $NEW_ACCESS_TOKEN && -n $NEW_REFRESH_TOKEN ]] || die "the refresh response lacks access_token or refresh_token"
[[ $NEW_REFRESH_TOKEN != "$REFRESH_TOKEN" ]] || die "the refresh token was not rotated"
[[ $NEW_ACCESS_TOKEN != "$ACCESS_TOKEN" ]] || die "the access token did not change"
show_var NEW_ACCESS_TOKEN
show_var NEW_REFRESH_TOKEN

# ---------------------------------------------------------------------------------
step 9a "Replay the OLD refresh token: invalid_grant, and the whole grant is revoked"
call 400 'curl -s "$BASE/api/oauth/token" \
    -d grant_type=refresh_token \
    --data-urlencode "refresh_token=$REFRESH_TOKEN" \
    --data-urlencode "client_id=$CLIENT_ID"'
[[ $(json_str error) == invalid_grant ]] || die "expected error invalid_grant, got '$(json_str error)'"

step 9b "The NEW access token is now rejected too"
call 401 'curl -s "$BASE/api/oauth/userinfo" -H "Authorization: Bearer $NEW_ACCESS_TOKEN"'
[[ $(json_str error) == invalid_token ]] || die "expected error invalid_token, got '$(json_str error)'"
WWW_AUTHENTICATE=$(header www-authenticate)
printf '# WWW-Authenticate: %s\n' "$WWW_AUTHENTICATE"
[[ $WWW_AUTHENTICATE == Bearer*'error="invalid_token"'* ]] || die "the 401 lacks a Bearer invalid_token challenge"

# ---------------------------------------------------------------------------------
step 10 "What the emulator saw (counters; cumulative since start or reset)"
call 200 'curl -s "$BASE/__emulator/stats"'
expect_body '"authorization_code":{[^}]*"ok":[1-9]' "stats count no successful code exchange"
expect_body '"refresh_token":{[^}]*"invalid_grant":[1-9]' "stats count no refresh_token invalid_grant"
expect_body '"refresh_token":{[^}]*"ok":[1-9]' "stats count no successful refresh"
expect_body '"family_revoked":[1-9]' "stats count no revoked token family"
expect_body '"code_issued":[1-9]' "stats count no issued code"

printf '\nwalkthrough: all steps OK\n'
