#!/bin/sh
# knock.sh DST PORT SECRET
# knock.sh SRC DST PORT SECRET
#
# Sends an advanced-mode knock: the one-time password for SECRET, the source address and the
# current minute, as one UDP datagram to PORT on DST. Like the knock.sh client of the netfilter
# pknock match, with `portknock otp` doing the work (no python, socat or nemesis needed). The
# source address is found from the route to DST; the pknock script's four-argument form, which
# names it first, works too: SRC is then the address the server sees (`portknock otp --source`,
# e.g. a NAT's outside address), while the datagram leaves from the address the route picks.
#
# The secret reaches portknock through the PORTKNOCK_SECRET environment variable, not its
# command line, so `ps` does not show it for the portknock process. This script's own command
# line does hold it, as the original's did: other local users can read it while the script
# runs. Where that matters, use `portknock otp DST PORT --secret-file FILE` instead.
#
# portknock is $PORTKNOCK when set, else the one on PATH.
# Exit status: that of `portknock otp` (0 sent, 1 failed, 2 bad usage); 2 on wrong arguments.

set -eu

usage() {
    echo "usage: $0 DST PORT SECRET" >&2
    echo "       $0 SRC DST PORT SECRET" >&2
    echo "  sends the one-time password for SECRET and this minute to UDP PORT on DST;" >&2
    echo "  SRC is the source address the server sees, when it is not this machine's own" >&2
    exit 2
}

case $# in
    3) ;;
    4) src=$1; shift; set -- "$@" --source "$src" ;;
    *) usage ;;
esac
# From here on: DST PORT SECRET [--source SRC]

portknock=${PORTKNOCK:-portknock}
if ! command -v "$portknock" >/dev/null 2>&1; then
    echo "$0: cannot find $portknock: install portknock on PATH or set PORTKNOCK to its path" >&2
    exit 1
fi

PORTKNOCK_SECRET=$3
export PORTKNOCK_SECRET
dst=$1 port=$2
shift 3
exec "$portknock" otp "$dst" "$port" "$@"
